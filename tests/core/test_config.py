from __future__ import annotations

import pytest

from rohrpost.config import ConfigError, parse_config
from rohrpost.tomlpos import KeyLines


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [
    ('[pipeline]\nauthserv_idd = "x"\n', 2, "pipeline.authserv_idd", "did you mean 'authserv_id'"),
    ('[pipeline]\n\non_error = "tmpfail"\n', 3, "pipeline.on_error", "did you mean 'tempfail'"),
    ('[pipelin]\n', 1, "pipelin", "did you mean 'pipeline'"),
    ('[actions]\nreject = "high"\n', 2, "actions.reject", "must be a number"),
    ('[[filter]]\nuse = "size"\n[[filter]]\ntimeout = 3\n', 3, "filter[1].use", "needs use"),
    ('[[filter]]\nuse = "nosuchfilter"\n', 2, "filter[0].use", "unknown filter"),
    ('[pipeline]\nx = [\n', 2, "", "TOML syntax error"),
])
def test_errors_are_located(text: str, line: int, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg = parse_config(text, "p.toml")
        from rohrpost.pipeline import Pipeline

        Pipeline.build(cfg)
    err = info.value
    assert err.file == "p.toml"
    assert err.line == line
    assert err.key == key
    assert fragment in str(err)


def test_duplicate_filter_names() -> None:
    with pytest.raises(ConfigError, match="two filters are called"):
        parse_config('[[filter]]\nuse = "a"\n[[filter]]\nuse = "a"\n', "p.toml")


def test_defaults_and_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.toml"
    cfg = parse_config('[pipeline]\nvar_dir = "var"\n', str(path))
    assert cfg.var_dir == str(tmp_path / "var")
    assert cfg.quarantine_dir == str(tmp_path / "var" / "quarantine")
    assert cfg.pipeline.on_error == "tempfail"
    assert cfg.authserv_id == cfg.hostname


def test_key_lines_follow_array_tables() -> None:
    text = ('[[filter]]\nuse = "rules"\n[[filter.rule]]\nname = "A"\n'
            '[[filter.rule]]\nname = "B"\nregex = "("\n[[filter]]\nuse = "size"\n')
    lines = KeyLines(text)
    assert lines.line_of("filter[0].rule[1].regex") == 7
    assert lines.line_of("filter[0].rule[0].name") == 4
    assert lines.line_of("filter[1].use") == 9
    assert lines.line_of("filter[1].nothing") == 8


def test_destinations_in_the_file_are_relative_to_its_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """docs/pipeline.md: relative paths are relative to the configuration file's folder."""
    monkeypatch.setenv("HOME", "/home/bob")
    cfg = parse_config("", str(tmp_path / "p.toml"))
    assert cfg.resolve_destination("maildir:var/Maildir") == f"maildir:{tmp_path}/var/Maildir"
    assert cfg.resolve_destination("mbox:mail/box") == f"mbox:{tmp_path}/mail/box"
    assert cfg.resolve_destination("lmtp:unix:run/lmtp") == f"lmtp:unix:{tmp_path}/run/lmtp"
    assert cfg.resolve_destination("maildir:~/Maildir") == "maildir:/home/bob/Maildir"
    for spec in ("maildir:/srv/M", "smtp:127.0.0.1:10026", "lmtp:127.0.0.1:24",
                 "pipe:bin/x --y", "bogus"):
        assert cfg.resolve_destination(spec) == spec


def test_tilde_in_a_destination_is_the_home_folder(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """README: `rohrpost run --deliver maildir:~/Maildir` (the shell leaves ~ after a colon)."""
    from rohrpost.deliver import parse_destination

    monkeypatch.setenv("HOME", "/home/bob")
    assert parse_destination("maildir:~/Maildir").path == "/home/bob/Maildir"
    assert parse_destination("mbox:~/mbox").path == "/home/bob/mbox"
    assert parse_destination("lmtp:unix:~/lmtp").path == "/home/bob/lmtp"
