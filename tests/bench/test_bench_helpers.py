"""Unit tests of the bench helpers (no daemons): make test imports the bench and checks them."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import tomllib
from pathlib import Path

import dkim
import pytest

from bench import configs, messages, milters, procstat, report, stats, tools
from bench.mta import RunResult, split
from bench.runner import ConfigResult, check_sample

# ---------------------------------------------------------------- stats and table


@pytest.mark.parametrize(("values", "median", "spread"), [
    ([], 0.0, 0.0),
    ([5.0], 5.0, 0.0),
    ([1.0, 3.0, 2.0], 2.0, 1.0),
    ([10.0, 12.0], 11.0, 2 / 11),
])
def test_summarize(values, median, spread):
    s = stats.summarize(values)
    assert s.median == pytest.approx(median)
    assert s.spread == pytest.approx(spread)
    assert s.runs == len(values)


def test_summary_fmt():
    assert stats.summarize([]).fmt() == "-"
    assert stats.summarize([4.0]).fmt() == "4.0"
    assert stats.summarize([90.0, 100.0, 110.0]).fmt() == "100.0 ±10%"
    assert stats.summarize([1.234, 1.234]).fmt(2) == "1.23 ±0%"


@pytest.mark.parametrize(("value", "ref", "expected"), [
    (50.0, 100.0, 0.5), (100.0, 50.0, 2.0), (None, 1.0, None), (1.0, None, None),
    (1.0, 0.0, None),
])
def test_ratio(value, ref, expected):
    assert stats.ratio(value, ref) == expected


def test_fmt_ratio_and_num():
    assert stats.fmt_ratio(None) == "-"
    assert stats.fmt_ratio(0.5) == "0.50x"
    assert stats.fmt_num(None) == "-"
    assert stats.fmt_num(3.14159, 2) == "3.14"


def test_markdown_table_aligns_escapes_and_pads():
    text = stats.markdown_table(("a", "long header"), [["x|y", "1"], ["z"]])
    lines = text.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # every line equally wide
    assert lines[1].startswith("|---")
    assert "x\\|y" in lines[2]
    assert lines[3].count("|") == 3  # padded with an empty cell


def test_markdown_table_rejects_long_rows():
    with pytest.raises(ValueError, match="3 cells"):
        stats.markdown_table(("a", "b"), [["1", "2", "3"]])


@pytest.mark.parametrize(("total", "parts"), [(5000, 1), (5000, 5), (7, 3), (2, 5)])
def test_split_preserves_total(total, parts):
    out = split(total, parts)
    assert sum(out) == total
    assert len(out) == parts
    assert max(out) - min(out) <= 1


# ---------------------------------------------------------------- ratios in the report


def _run(rate: float, cpu_ms: float, n: int = 100) -> RunResult:
    return RunResult(messages=n, seconds=n / rate, filter_cpu=cpu_ms * n / 1000,
                     postfix_cpu=0.1)


def test_report_ratios_against_ceiling_and_reference():
    cfgs = {c.key: c for c in configs.all_configs()}
    results = [
        ConfigResult(cfgs["ceiling"], plain=[_run(400, 0)], mime=[_run(200, 0)]),
        ConfigResult(cfgs["sign-opendkim"], plain=[_run(200, 4.0)], mime=[_run(100, 4)],
                     check="ok"),
        ConfigResult(cfgs["sign-dkimpy"], plain=[_run(100, 12.0), _run(100, 12.0)],
                     mime=[_run(50, 12)], check="ok"),
        ConfigResult(cfgs["sign-rohrpost"], error="not available (milter missing)"),
    ]
    rows = report.rows(results)
    dkimpy = rows[2]
    assert dkimpy[3] == "0.25x"  # 100 / 400 msg/s
    assert dkimpy[4] == "0.50x"  # 100 / 200 msg/s of OpenDKIM
    assert dkimpy[6] == "3.00x"  # 12 / 4 ms CPU
    assert rows[1][4] == "-"  # the reference has no reference
    assert rows[3][2] == "not available (milter missing)"
    assert rows[3][3:12] == ["-"] * 9
    assert len(rows[3]) == len(rows[2]) == len(report.HEADER)
    assert "sign-rohrpost" not in report.notes(results)


def test_report_truncates_long_errors_into_notes():
    cfg = configs.all_configs()[1]
    long = "could not start: " + "x" * 200
    res = [ConfigResult(cfg, error=long)]
    assert len(report.rows(res)[0][2]) <= 70
    assert long in report.notes(res)


def test_run_result_per_message_figures():
    r = RunResult(messages=200, seconds=2.0, filter_cpu=0.5, postfix_cpu=1.0)
    assert r.rate == 100.0
    assert r.filter_ms == 2.5  # = CPU seconds per 1,000 messages
    assert r.postfix_ms == 5.0


# ---------------------------------------------------------------- /proc parsing


def test_parse_stat_with_spaces_and_parentheses_in_comm():
    line = ("4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
            f"{3 * procstat.CLK_TCK} {2 * procstat.CLK_TCK} {procstat.CLK_TCK} 0 20 0 1 0 "
            "12345 1000 100")
    st = procstat.parse_stat(line)
    assert (st.pid, st.comm, st.ppid, st.session) == (4242, "a (weird) name", 1, 4242)
    assert st.cpu == pytest.approx(6.0)


def test_read_stat_of_current_process():
    st = procstat.read_stat(os.getpid())
    assert st is not None
    assert st.pid == os.getpid()
    assert st.ppid == os.getppid()
    assert st.session == os.getsid(0)
    sum(range(200_000))  # burn a little CPU
    assert procstat.read_stat(os.getpid()).utime >= st.utime


def test_read_stat_of_gone_process_is_none():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert procstat.read_stat(proc.pid) is None


def test_vmhwm_of_current_process():
    assert procstat.vmhwm(os.getpid()) > 1024 * 1024
    assert procstat.parse_vmhwm("Name:\tx\nVmHWM:\t  2048 kB\n") == 2048 * 1024
    assert procstat.parse_vmhwm("Name:\tkthread\n") == 0


def test_pss_of_current_process():
    assert 0 < procstat.pss(os.getpid()) <= procstat.vmhwm(os.getpid())
    rollup = "00400000-7ffd [rollup]\nRss:\t  4096 kB\nPss:\t  1500 kB\nPss_Anon:\t 1 kB\n"
    assert procstat.parse_pss(rollup) == 1500 * 1024
    assert procstat.parse_pss("") == 0


def test_select_tree_counts_children_and_sessions():
    child = subprocess.Popen(["sleep", "5"], start_new_session=True)
    try:
        stats_now = procstat.all_stats()
        mine = {s.pid for s in procstat.select_tree(stats_now, roots=[os.getpid()])}
        assert {os.getpid(), child.pid} <= mine
        by_session = {s.pid for s in procstat.select_tree(stats_now, sessions=[child.pid])}
        assert by_session == {child.pid}
        usage = procstat.tree_usage(roots=[os.getpid()])
        assert usage.cpu > 0
        assert usage.rss > 0
        assert 0 < usage.pss <= usage.rss
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------- messages


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_plain_message_exact_size_and_valid():
    data = messages.plain_message(4096)
    assert len(data) == 4096
    msg = _parse(data)
    assert msg["From"].addresses[0].addr_spec == messages.SENDER
    assert msg.get_content_type() == "text/plain"
    assert not msg.defects
    assert b"\r" not in data  # smtp-source -F appends CRLF itself


@pytest.mark.parametrize("size", [20_000, 40_000, 60_000, 80_000, 100_000])
def test_mime_message_size_and_structure(size):
    data = messages.mime_message(size, seed=size)
    assert abs(len(data) - size) <= size * 0.02
    msg = _parse(data)
    assert msg.get_content_type() == "multipart/mixed"
    assert not msg.defects
    attachments = list(msg.iter_attachments())
    types = sorted(a.get_content_type() for a in attachments)
    assert types == ["application/pdf", "application/zip"]
    for part in attachments:
        assert part.get_content()  # base64 decodes
    assert msg.get_body(("plain",)) is not None
    assert max(len(line) for line in data.splitlines()) <= 998


def test_messages_are_deterministic():
    assert messages.mime_message(30_000, 3) == messages.mime_message(30_000, 3)


def test_presigned_message_verifies(tmp_path):
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    signed = messages.dkim_presign(messages.mime_message(20_000), "bench", "example.org",
                                   key.read_bytes())
    assert signed.startswith(b"DKIM-Signature:")
    assert b"\r" not in signed
    assert dkim.verify(messages.to_crlf(signed), dnsfunc=lambda name, timeout=5: record)


# ---------------------------------------------------------------- tool configurations


def _kv(text: str, sep: str = " ") -> dict[str, str]:
    return dict(line.split(sep, 1) for line in text.splitlines())


def test_opendkim_sign_and_verify(tmp_path):
    sign = _kv(tools.opendkim_conf(tmp_path, tools.Listen(port=1234), "s", domain="example.org", selector="b",
                                   key=tmp_path / "k"))
    assert sign["Socket"] == "inet:1234@127.0.0.1"
    assert (sign["Mode"], sign["Domain"], sign["Selector"]) == ("s", "example.org", "b")
    assert sign["Background"] == "false"
    verify = _kv(tools.opendkim_conf(tmp_path, tools.Listen(port=1), "v", domain="d", selector="s", key=tmp_path))
    assert verify["Mode"] == "v"
    assert "127.0.0.1" not in verify["InternalHosts"]  # loopback clients are verified
    assert "KeyFile" not in verify


def test_dkimpy_milter_conf(tmp_path):
    conf = _kv(tools.dkimpy_milter_conf(tmp_path, tools.Listen(port=99), "s", domain="example.org", selector="b",
                                        key=tmp_path / "k"))
    assert conf["Socket"] == "inet:99@127.0.0.1"
    assert conf["KeyFile"] == str(tmp_path / "k")


def test_opendmarc_conf_checks_loopback(tmp_path):
    conf = _kv(tools.opendmarc_conf(tmp_path, tools.Listen(path=tmp_path / "m.sock")))
    assert conf["Socket"] == f"unix:{tmp_path}/m.sock"
    assert conf["IgnoreHosts"] == str(tmp_path / "ignore.hosts")
    assert conf["SPFSelfValidate"] == "true"
    assert conf["HistoryFile"] == str(tmp_path / "opendmarc.history")  # report data, as rohrpost


def test_pyspf_milter_conf_checks_loopback(tmp_path):
    conf = _kv(tools.pyspf_milter_conf(tmp_path, tools.Listen(port=8)), sep=" = ")
    assert conf["Socket"] == "inet:8@127.0.0.1"
    assert "127." not in conf["skip_addresses"]
    assert "127." not in conf["InternalHosts"]
    assert conf["TestOnly"] == "1"


def test_clamd_and_clamav_milter(tmp_path):
    clamd = _kv(tools.clamd_conf(tmp_path, 3310, tmp_path / "db"))
    assert (clamd["TCPAddr"], clamd["TCPSocket"], clamd["Foreground"]) == (
        "127.0.0.1", "3310", "true")
    milter = _kv(tools.clamav_milter_conf(tmp_path, tools.Listen(path=Path("/s/m.sock")), 3310))
    assert milter["ClamdSocket"] == "tcp:127.0.0.1:3310"
    assert milter["MilterSocket"] == "unix:/s/m.sock"


def test_spam_argv():
    argv = tools.spamass_milter_argv(tools.Listen(port=6), 783, Path("/x/p"))
    assert argv[:3] == ["spamass-milter", "-p", "inet:6@127.0.0.1"]
    assert argv[argv.index("--") + 1:] == ["-d", "127.0.0.1", "-p", "783"]
    spamd = tools.spamd_argv(783, Path("/x/pid"))
    assert "127.0.0.1:783" in spamd
    assert "-L" in spamd  # local tests only: no network lookups


def test_rspamd_files_loopback_and_checks(tmp_path):
    files = tools.rspamd_local_files(tools.Listen(port=11332), normal_port=1, controller_port=2, redis_port=3,
                                     clamd_port=4, dbdir=tmp_path)
    assert 'bind_socket = "127.0.0.1:11332"' in files["override.d/worker-proxy.inc"]
    assert "self_scan = yes" in files["override.d/worker-proxy.inc"]
    assert '127.0.0.1:3' in files["local.d/redis.conf"]
    assert '127.0.0.1:4' in files["local.d/antivirus.conf"]
    for module in ("spf", "dkim", "dmarc", "arc"):
        assert "check_local = true" in files[f"local.d/{module}.conf"]
    argv = tools.rspamd_argv(tmp_path, tmp_path, tmp_path, tmp_path / "pid")
    assert f"LOCAL_CONFDIR={tmp_path}" in argv


def test_listen_spellings_unix_and_tcp(tmp_path):
    unix = tools.Listen(path=tmp_path / "m.sock")
    assert unix.milter == unix.postfix == f"unix:{tmp_path}/m.sock"
    assert unix.rspamd == f"{tmp_path}/m.sock mode=0666"
    tcp = tools.Listen(port=8891)
    assert (tcp.milter, tcp.postfix, tcp.rspamd) == (
        "inet:8891@127.0.0.1", "inet:127.0.0.1:8891", "127.0.0.1:8891")
    files = tools.rspamd_local_files(unix, normal_port=1, controller_port=2, redis_port=3,
                                     clamd_port=4, dbdir=tmp_path)
    assert f'bind_socket = "{tmp_path}/m.sock mode=0666"' in files["override.d/worker-proxy.inc"]


def test_listen_accepting_sees_a_unix_listener(tmp_path):
    import socket

    listen = tools.Listen(path=tmp_path / "m.sock")
    assert not listen.accepting()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(listen.path))
        server.listen(1)
        assert listen.accepting()
    assert not tools.Listen(port=_closed_port()).accepting()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_toml_value():
    assert tools.toml_value(True) == "true"
    assert tools.toml_value('a"b') == '"a\\"b"'
    assert tools.toml_value([1, "x"]) == '[1, "x"]'
    assert tools.toml_value({"a": 1}) == "{ a = 1 }"
    with pytest.raises(TypeError):
        tools.toml_value(object())


@pytest.mark.parametrize("cfg", [c for c in configs.all_configs() if c.is_rohrpost],
                         ids=lambda c: c.key)
def test_rohrpost_pipelines_render_and_load(cfg, tmp_path):
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    text = configs.render_rohrpost(cfg, tmp_path / "var", key, clamd_port=3310,
                                   spamd_port=783, dns_port=5353)
    raw = tomllib.loads(text)
    assert [f["use"] for f in raw["filter"]] == list(cfg.filter_names())
    assert raw["dns"]["servers"] == ["127.0.0.1:5353"]
    assert raw["state"]["synchronous"] == "normal"  # like OpenDMARC's unsynced history file
    # the job's headers only, as the reference tools add them
    assert raw["pipeline"]["status_header"] is False
    spam = "spamassassin" in cfg.filter_names()
    assert raw["pipeline"]["spam_headers"] == ("always" if spam else "never")
    assert milters.rohrpost_missing(cfg) == []  # every bench row's filters exist
    from rohrpost.config import parse_config
    from rohrpost.pipeline import Pipeline

    Pipeline.build(parse_config(text, str(tmp_path / "pipeline.toml")))


# ---------------------------------------------------------------- the configuration list


def test_config_list_is_consistent():
    cfgs = configs.all_configs()
    keys = [c.key for c in cfgs]
    assert len(keys) == len(set(keys))
    by_key = dict(zip(keys, cfgs, strict=True))
    for c in cfgs:
        assert all(m in milters.MILTERS for m in c.milters), c.key
        if c.reference:
            ref = by_key[c.reference]
            assert keys.index(ref.key) < keys.index(c.key), c.key  # measured first
            assert ref.job == c.job or c.job.startswith(ref.job), c.key
        assert c.is_rohrpost == ("rohrpost" in c.milters)


def test_select_keeps_ceiling_and_references():
    chosen = [c.key for c in configs.select(configs.all_configs(), "verify-rohrpost,chain-r")]
    assert chosen[0] == "ceiling"
    assert {"verify-opendkim", "verify-rohrpost", "chain-c", "chain-rohrpost",
            "chain-rspamd"} <= set(chosen)
    assert "sign-opendkim" not in chosen


@pytest.mark.parametrize(("sample", "expected"), [
    (b"Authentication-Results: x; DKIM=pass\r\n", "ok"),
    (b"Subject: nothing\r\n", "MISSING dkim=pass"),
])
def test_check_sample(sample, expected):
    cfg = next(c for c in configs.all_configs() if c.key == "verify-opendkim")
    assert check_sample(cfg, sample) == expected
