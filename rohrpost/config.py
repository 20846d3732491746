"""pipeline.toml: load, validate, and report errors with file, line, key and a suggestion.

Owns ``Config`` (the validated whole), the section tables and ``ConfigError``. Sections are
typed option tables (``rohrpost.options.OptionTable``) validated by ``rohrpost.options``; each
``[[filter]]`` table is split into the pipeline's own keys (``use``, ``name``, ``timeout``,
``on_error``, ``when``) and the filter's options, which the filter's own ``Options`` table
validates. Relative paths are resolved against the configuration file's folder.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from rohrpost.options import (
    OptionError,
    OptionTable,
    build_options,
    option,
    option_fields,
    suggest,
)
from rohrpost.record import FrozenRecord
from rohrpost.tomlpos import KeyLines


class ConfigError(ValueError):
    """One configuration error, located: ``file:line: key: message (suggestion)``."""

    def __init__(self, file: str, line: int, key: str, message: str, suggestion: str = "") -> None:
        self.file, self.line, self.key = file, line, key
        self.message, self.suggestion = message, suggestion
        where = f"{file}:{line}" if line else file
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text + (f" ({suggestion})" if suggestion else ""))


OnError = Literal["tempfail", "skip", "accept", "reject"]


class PipelineSection(OptionTable):
    """``[pipeline]``: settings that apply to the whole pipeline."""

    authserv_id: str = ""
    hostname: str = ""
    on_error: OnError = "tempfail"
    timeout: float = 30.0
    var_dir: str = "/var/lib/rohrpost"
    spam_headers: Literal["always", "spam", "never"] = "always"
    status_header: bool = True
    max_size: int = 50 * 1024 * 1024
    trusted_networks: list[str] = option(default_factory=lambda: ["127.0.0.0/8", "::1/128"])


class DomainActions(OptionTable):
    """``[actions.domain."example.org"]``: thresholds for one recipient domain.

    Every key is optional; an unset key inherits the global ``[actions]`` value. ``inf``
    (TOML's infinity) switches a global threshold off for the domain.
    """

    add_header: float | None = None
    rewrite_subject: float | None = None
    subject_tag: str | None = None
    quarantine: float | None = None
    tempfail: float | None = None
    reject: float | None = None
    reject_message: str | None = None
    tempfail_message: str | None = None


_THRESHOLDS = ("add_header", "rewrite_subject", "quarantine", "tempfail", "reject")


class ActionsSection(OptionTable):
    """``[actions]``: score thresholds to actions, as in Rspamd (unset = never).

    ``domain`` maps a recipient domain (``"example.org"``, or ``".example.org"`` for its
    subdomains) to overrides; see ``for_recipients`` for how they combine.
    """

    add_header: float | None = None
    rewrite_subject: float | None = None
    subject_tag: str = "[SPAM]"
    quarantine: float | None = None
    tempfail: float | None = None
    reject: float | None = None
    reject_message: str = "550 5.7.1 Message rejected as spam"
    tempfail_message: str = "451 4.7.1 Try again later"
    domain: dict[str, DomainActions] = option(default_factory=dict)

    def override_for(self, domain: str) -> DomainActions | None:
        """Return the override for ``domain``: exact key first, else the longest ``.suffix``."""
        domain = domain.lower().rstrip(".")
        table = {k.lower().rstrip("."): v for k, v in self.domain.items()}
        if domain in table:
            return table[domain]
        suffixes = [k for k in table if k.startswith(".") and domain.endswith(k)]
        return table[max(suffixes, key=len)] if suffixes else None

    def merged(self, override: DomainActions | None) -> ActionsSection:
        """Return these actions with the keys ``override`` sets replaced (no ``domain``)."""
        values = {f.name: getattr(self, f.name) for f in option_fields(ActionsSection)}
        values["domain"] = {}
        if override is not None:
            for f in option_fields(DomainActions):
                if getattr(override, f.name) is not None:
                    values[f.name] = getattr(override, f.name)
        return ActionsSection(**values)

    def for_recipients(self, domains: Iterable[str]) -> ActionsSection:
        """Return the effective actions for a message to recipients in ``domains``.

        All recipients under one setting (a domain override or the global one): that setting.
        Mixed settings: the strictest, i.e. each threshold is the lowest any recipient has
        (unset counts as never), texts come from the global section. A reject or tempfail
        concerns the whole SMTP transaction, so one recipient's stricter policy wins rather
        than letting spam through to it.
        """
        choices = {id(o): o for o in (self.override_for(d) for d in domains)}
        if not self.domain or not choices:
            return self.merged(None)
        if len(choices) == 1:
            return self.merged(next(iter(choices.values())))
        each = [self.merged(o) for o in choices.values()]
        strictest: dict[str, float | None] = {}
        for name in _THRESHOLDS:
            set_values = [getattr(a, name) for a in each if getattr(a, name) is not None]
            strictest[name] = min(set_values) if set_values else None
        base = self.merged(None)
        values = {f.name: getattr(base, f.name) for f in option_fields(ActionsSection)}
        return ActionsSection(**{**values, **strictest})


class DnsSection(OptionTable):
    """``[dns]``: the resolver; empty ``servers`` means the system resolver."""

    servers: list[str] = option(default_factory=list)
    timeout: float = 5.0
    cache_size: int = 10000


class StateSection(OptionTable):
    """``[state]``: where greylist, rate and report state lives."""

    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    path: str = ""
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "rohrpost:"
    timeout: float = 2.0
    synchronous: Literal["full", "normal"] = "full"  # SQLite only; "normal": not power-loss safe


class QuarantineSection(OptionTable):
    """``[quarantine]``: the local quarantine and where released mail goes."""

    dir: str = ""
    release_to: str = ""
    use_mta_hold: bool = False


class LogSection(OptionTable):
    """``[log]``: level, target and format of the log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    target: Literal["stderr", "syslog"] = "stderr"
    format: Literal["text", "json"] = "text"


class MilterSection(OptionTable):
    """``[milter]``: defaults for ``rohrpost milter``."""

    socket: str = "inet:8891@127.0.0.1"
    workers: int = 1  # one event loop serves every connection; more for CPU-bound loads
    timeout: float = 25.0  # below Postfix's milter_command_timeout (30 s)
    metrics: str = ""
    engine: Literal["asyncio", "libmilter"] = "asyncio"  # docs/decisions.md


class ServeSection(OptionTable):
    """``[serve]``: defaults for ``rohrpost serve``."""

    listen: str = "127.0.0.1:10025"
    lmtp: bool = False
    deliver: str = ""
    max_size: int = 50 * 1024 * 1024
    metrics: str = ""


class When(OptionTable):
    """``[filter.when]``: conditions; the filter runs only when all given ones hold."""

    authenticated: bool | None = None
    client_networks: list[str] = option(default_factory=list)
    not_client_networks: list[str] = option(default_factory=list)
    sender_domains: list[str] = option(default_factory=list)
    recipient_domains: list[str] = option(default_factory=list)
    max_size: int | None = None


class FilterSpec(FrozenRecord):
    """One ``[[filter]]`` entry: which filter, its pipeline settings, its raw options."""

    _fields = ("use", "name", "index", "timeout", "on_error", "when", "options")
    use: str
    name: str
    index: int
    timeout: float | None
    on_error: OnError | None
    when: When
    options: Mapping[str, Any]

    def __init__(self, use: str, name: str, index: int, timeout: float | None = None,  # noqa: PLR0917
                 on_error: OnError | None = None, when: When | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        _set = object.__setattr__
        _set(self, "use", use)
        _set(self, "name", name)
        _set(self, "index", index)
        _set(self, "timeout", timeout)
        _set(self, "on_error", on_error)
        _set(self, "when", When() if when is None else when)
        _set(self, "options", {} if options is None else options)


SECTIONS: dict[str, type[Any]] = {
    "pipeline": PipelineSection, "actions": ActionsSection, "dns": DnsSection,
    "state": StateSection, "quarantine": QuarantineSection, "log": LogSection,
    "milter": MilterSection, "serve": ServeSection,
}
_SPEC_KEYS = ("use", "name", "timeout", "on_error", "when")
# sections owned by other parts (fetch accounts, delivery rules) are validated by their owners
EXTRA_SECTIONS = ("fetch", "deliver", "dmarc", "dkim", "reports")


class Config(FrozenRecord):
    """The validated configuration; ``raw`` keeps extra sections for their owners."""

    _fields = ("path", "pipeline", "actions", "dns", "state", "quarantine", "log", "milter",
               "serve", "filters", "raw", "lines")
    path: str
    pipeline: PipelineSection
    actions: ActionsSection
    dns: DnsSection
    state: StateSection
    quarantine: QuarantineSection
    log: LogSection
    milter: MilterSection
    serve: ServeSection
    filters: tuple[FilterSpec, ...]
    raw: Mapping[str, Any]
    lines: KeyLines

    def __init__(self, path: str, pipeline: PipelineSection, actions: ActionsSection,  # noqa: PLR0917
                 dns: DnsSection, state: StateSection, quarantine: QuarantineSection,
                 log: LogSection, milter: MilterSection, serve: ServeSection,
                 filters: tuple[FilterSpec, ...], raw: Mapping[str, Any],
                 lines: KeyLines) -> None:
        _set = object.__setattr__
        _set(self, "path", path)
        _set(self, "pipeline", pipeline)
        _set(self, "actions", actions)
        _set(self, "dns", dns)
        _set(self, "state", state)
        _set(self, "quarantine", quarantine)
        _set(self, "log", log)
        _set(self, "milter", milter)
        _set(self, "serve", serve)
        _set(self, "filters", filters)
        _set(self, "raw", raw)
        _set(self, "lines", lines)

    @property
    def base_dir(self) -> str:
        """Folder of the configuration file (relative paths are resolved against it)."""
        return os.path.dirname(os.path.abspath(self.path)) if self.path else os.getcwd()

    def resolve_path(self, path: str) -> str:
        """``path`` made absolute relative to the configuration file's folder."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))

    def resolve_destination(self, spec: str) -> str:
        """A destination written in this file, with its maildir/mbox/socket path made absolute.

        Relative paths are taken against the file's folder and ``~`` is the home folder; other
        destinations (smtp, lmtp over TCP, pipe) are returned unchanged.
        """
        kind, sep, rest = spec.partition(":")
        name = kind.strip().lower()
        prefix = kind + sep
        if name == "lmtp" and rest.startswith("unix:"):
            prefix, rest = prefix + "unix:", rest[len("unix:"):]
        elif name not in ("maildir", "mbox"):
            return spec
        if not rest:
            return spec
        return prefix + self.resolve_path(os.path.expanduser(rest))

    @property
    def var_dir(self) -> str:
        """Where state, quarantine and spool live."""
        return self.resolve_path(self.pipeline.var_dir)

    @property
    def quarantine_dir(self) -> str:
        """The quarantine folder."""
        return self.resolve_path(self.quarantine.dir or os.path.join(self.var_dir, "quarantine"))

    @functools.cached_property
    def hostname(self) -> str:
        """Name of this host (``[pipeline] hostname`` or the system's)."""
        # os.uname().nodename is what socket.gethostname() returns on POSIX (glibc's
        # gethostname() is uname()), without importing socket (and selectors) in pipe mode.
        return self.pipeline.hostname or os.uname().nodename

    @functools.cached_property
    def authserv_id(self) -> str:
        """The authserv-id for Authentication-Results."""
        return self.pipeline.authserv_id or self.hostname

    def error(self, key: str, message: str, suggestion: str = "") -> ConfigError:
        """A ``ConfigError`` located at ``key`` in this file."""
        return ConfigError(self.path or "<defaults>", self.lines.line_of(key), key, message,
                           suggestion)


def load_config(path: str | None) -> Config:
    """Read and validate ``path`` (``None``: built-in defaults, no filters).

    :raises ConfigError: on a syntax error or any invalid key, with file and line.
    """
    if path is None:
        return parse_config("", "")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, 0, "", "not UTF-8 text") from None
    return parse_config(text, path)


def parse_config(text: str, path: str) -> Config:
    """Validate TOML ``text`` (read from ``path``) into a ``Config``."""
    lines = KeyLines(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        import re

        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else max(1, len(text.splitlines()))
        raise ConfigError(path, line, "", f"TOML syntax error: {exc}") from None
    known = [*SECTIONS, "filter", *EXTRA_SECTIONS]
    for key in raw:
        if key not in known:
            raise ConfigError(path, lines.line_of(key), key, "unknown section", suggest(key, known))
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(path, lines.line_of(name), name, "must be a table ([name])")
        try:
            sections[name] = build_options(cls, table, name)
        except OptionError as exc:
            raise ConfigError(path, lines.line_of(exc.path), exc.path, exc.message,
                              exc.suggestion) from None
    filters = _filter_specs(raw.get("filter", []), path, lines)
    return Config(path=path, filters=filters, raw=raw, lines=lines, **sections)


def _filter_specs(entries: Any, path: str, lines: KeyLines) -> tuple[FilterSpec, ...]:
    if not isinstance(entries, list):
        raise ConfigError(path, lines.line_of("filter"), "filter", "use [[filter]] tables")
    specs: list[FilterSpec] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"filter[{i}]"
        if "use" not in entry or not isinstance(entry["use"], str):
            raise ConfigError(path, lines.line_of(where), f"{where}.use",
                              "every [[filter]] needs use = \"NAME\"")
        opts = {k: v for k, v in entry.items() if k not in _SPEC_KEYS}
        try:
            spec_fields = build_options(_SpecFields, {k: v for k, v in entry.items()
                                                      if k in _SPEC_KEYS and k != "use"}, where)
        except OptionError as exc:
            raise ConfigError(path, lines.line_of(exc.path), exc.path, exc.message,
                              exc.suggestion) from None
        name = spec_fields.name or entry["use"]
        if name in names:
            raise ConfigError(path, lines.line_of(f"{where}.use"), f"{where}.name",
                              f"two filters are called {name!r}",
                              "give one of them name = \"...\"")
        names.add(name)
        specs.append(FilterSpec(use=entry["use"], name=name, index=i, timeout=spec_fields.timeout,
                                on_error=spec_fields.on_error, when=spec_fields.when,
                                options=opts))
    return tuple(specs)


class _SpecFields(OptionTable):
    name: str = ""
    timeout: float | None = None
    on_error: OnError | None = None
    when: When = option(default_factory=When)
