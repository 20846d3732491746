"""Start the milters of a configuration: one factory per milter key.

Each factory writes the tool's configuration (from :mod:`bench.tools`) into its own
directory and returns a :class:`bench.services.Daemon` that listens where ``listen`` says:
a Unix socket in that directory (the default) or a loopback TCP port (``--transport inet``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from bench import configs, messages, tools
from bench.services import Daemon, World, chown_tree, write_files
from tests.support.daemons import DaemonError, free_port

SOCKET_NAME = "milter.sock"

REPO = Path(__file__).resolve().parent.parent


def rohrpost_argv() -> list[str]:
    """``rohrpost`` from this checkout with the bench's interpreter (what bin/rohrpost execs).

    Not bin/rohrpost itself: it picks ``REPO/.venv`` or ``python3``, and a worktree may have
    no .venv of its own; the bench runs with the interpreter that has the dependencies. The
    entry point is bin/rohrpost's (``rohrpost.launch``), so pipe mode measures the click-free
    ``rohrpost run``; it does not count the launcher's ``sh`` (about 1 ms).
    """
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from rohrpost.launch import main; "
            "main(prog_name='rohrpost')")
    return [sys.executable, "-c", code, str(REPO)]


Cfg = configs.BenchConfig
Factory = Callable[[World, Path, tools.Listen, Cfg], Daemon]


def _opendkim(mode: str) -> Factory:
    def make(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
        conf = d / "opendkim.conf"
        conf.write_text(tools.opendkim_conf(d, listen, mode, domain=messages.SENDER_DOMAIN,
                                            selector="bench", key=world.key))
        return Daemon("opendkim", ["opendkim", "-f", "-x", str(conf)], listen, d)
    return make


def _dkimpy(mode: str) -> Factory:
    def make(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
        conf = d / "dkimpy-milter.conf"
        conf.write_text(tools.dkimpy_milter_conf(d, listen, mode, domain=messages.SENDER_DOMAIN,
                                                 selector="bench", key=world.key))
        return Daemon("dkimpy-milter", ["dkimpy-milter", str(conf)], listen, d)
    return make


def _opendmarc(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
    (d / "ignore.hosts").write_text(tools.NOBODY_NET + "\n")
    conf = d / "opendmarc.conf"
    conf.write_text(tools.opendmarc_conf(d, listen))
    chown_tree(d, "opendmarc")
    return Daemon("opendmarc", ["opendmarc", "-f", "-c", str(conf)], listen, d)


def _pyspf(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
    conf = d / "pyspf-milter.conf"
    conf.write_text(tools.pyspf_milter_conf(d, listen))
    chown_tree(d, "pyspf-milter")  # it drops privileges before creating its socket
    return Daemon("pyspf-milter", ["pyspf-milter", str(conf)], listen, d)


def _clamav_milter(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
    conf = d / "clamav-milter.conf"
    conf.write_text(tools.clamav_milter_conf(d, listen, world.backend_port("clamd")))
    return Daemon("clamav-milter", ["clamav-milter", "-c", str(conf)], listen, d)


def _spamass(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
    argv = tools.spamass_milter_argv(listen, world.backend_port("spamd"), d / "spamass.pid")
    return Daemon("spamass-milter", argv, listen, d)


def _rspamd(world: World, d: Path, listen: tools.Listen, _cfg: Cfg) -> Daemon:
    conf, db, rundir = d / "local", d / "db", d / "run"
    for sub in (conf, db, rundir):
        sub.mkdir(mode=0o755, exist_ok=True)
    write_files(conf, tools.rspamd_local_files(
        listen, normal_port=free_port(), controller_port=free_port(),
        redis_port=world.backend_port("redis"), clamd_port=world.backend_port("clamd"),
        dbdir=db))
    chown_tree(d, "_rspamd")
    return Daemon("rspamd", tools.rspamd_argv(conf, db, rundir, rundir / "rspamd.pid"),
                  listen, d, timeout=90)


def rohrpost_missing(cfg: configs.BenchConfig) -> list[str]:
    """What this rohrpost configuration needs and the checkout lacks (empty: runnable)."""
    from rohrpost import registry

    missing = []
    if importlib.util.find_spec("rohrpost.cli.miltercmd") is None:
        missing.append("milter")
    have = set(registry.available())
    missing += [f"filter {name}" for name in cfg.filter_names() if name not in have]
    return missing


def _rohrpost(world: World, d: Path, listen: tools.Listen, cfg: Cfg) -> Daemon:
    clamd = world.backend_port("clamd") if "clamd" in cfg.backends else None
    spamd = world.backend_port("spamd") if "spamd" in cfg.backends else None
    conf = d / "pipeline.toml"
    conf.write_text(configs.render_rohrpost(cfg, d / "var", world.key, clamd_port=clamd,
                                            spamd_port=spamd, dns_port=world.dns_port))
    argv = [*rohrpost_argv(), "milter", "-c", str(conf),
            "--socket", listen.milter, "--workers", str(world.rohrpost_workers)]
    return Daemon("rohrpost", argv, listen, d, timeout=60)


MILTERS: dict[str, Factory] = {
    "opendkim-sign": _opendkim("s"),
    "opendkim-verify": _opendkim("v"),
    "dkimpy-sign": _dkimpy("s"),
    "dkimpy-verify": _dkimpy("v"),
    "opendmarc": _opendmarc,
    "pyspf": _pyspf,
    "clamav-milter": _clamav_milter,
    "spamass-milter": _spamass,
    "rspamd": _rspamd,
    "rohrpost": _rohrpost,
}


def listen_for(d: Path, transport: str) -> tools.Listen:
    """Where a milter started in ``d`` listens: a Unix socket in ``d``, or a free port."""
    if transport == "inet":
        return tools.Listen(port=free_port())
    return tools.Listen(path=d / SOCKET_NAME)


def start_milters(world: World, cfg: configs.BenchConfig,
                  transport: str = "unix") -> list[Daemon]:
    """Start the backends and milters of ``cfg``; stop what started if one fails."""
    for backend in cfg.backends:
        world.backend(backend)
    started: list[Daemon] = []
    try:
        for key in cfg.milters:
            d = world.subdir(f"{cfg.key}/{key}")  # fresh per configuration: no stale pid files
            daemon = MILTERS[key](world, d, listen_for(d, transport), cfg)
            daemon.start()
            started.append(daemon)
    except (DaemonError, OSError):
        for daemon in started:
            daemon.stop()
        raise
    return started
