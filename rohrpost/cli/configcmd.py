"""``rohrpost config check``: validate a pipeline.toml, naming file, line, key and a fix.

Owns the config command group. Validation builds the whole pipeline (every filter's options
and files such as keys are checked), the ``[[fetch]]`` accounts, the ``[deliver]`` table and
the destinations of ``[serve]`` and ``[quarantine]``, so an error found here is an error
``milter``, ``serve``, ``run``, ``fetch`` or ``quarantine release`` would hit.
"""

from __future__ import annotations

import click

from rohrpost.cli.common import config_option, default_config_path
from rohrpost.config import Config, ConfigError, load_config
from rohrpost.sysexits import EX_CONFIG


@click.group("config")
def config_group() -> None:
    """Work with pipeline.toml."""


@config_group.command("check")
@config_option
def check_config(config_path: str | None) -> int:
    """Validate the configuration; exit 0 when it is good, 78 (EX_CONFIG) when not."""
    from rohrpost.pipeline import Pipeline

    path = config_path if config_path is not None else default_config_path()
    if path is None:
        click.echo("rohrpost config check: no configuration file found (give -c FILE)", err=True)
        return EX_CONFIG
    try:
        config = load_config(path)
        pipeline = Pipeline.build(config)
        _check_sections(config)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        return EX_CONFIG
    names = ", ".join(s.name for s in pipeline.steps) or "no filters"
    click.echo(f"{path}: OK ({len(pipeline.steps)} filters: {names})")
    return 0


def _check_sections(config: Config) -> None:
    """Validate what the pipeline does not read: accounts, sorting, destinations."""
    from rohrpost.deliver.destination import DestinationError, parse_destination

    if "fetch" in config.raw:
        from rohrpost.fetch.accounts import load_accounts

        load_accounts(config)
    if "deliver" in config.raw:
        from rohrpost.deliver.sorting import load_deliver_section

        load_deliver_section(config)
    for key, spec in (("serve.deliver", config.serve.deliver),
                      ("quarantine.release_to", config.quarantine.release_to)):
        if spec:
            try:
                parse_destination(spec)
            except DestinationError as exc:
                raise config.error(key, str(exc)) from None
