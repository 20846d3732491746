"""`rohrpost milter` behind a real Postfix (Debian's package), on loopback, relaying to aiosmtpd.

Runs the ``rules`` filter's contract (header rules only: the envelope rule is covered in pipe
and serve mode) with the real ``rules`` filter, and again with the test-only ``probe-rules``,
which also reports an authentication result, so the position of our Authentication-Results
header relative to Postfix's own Received header is checked through the real MTA.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rohrpost.apply import apply_changes
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from tests.milter.postfix_helper import Catcher, MilterProcess, Postfix, free_port, send, wait_for
from tests.milter.testfilters.probe_changes import parse
from tests.support.contract import ARCHIVE_RULE, HEADER_RULES

pytestmark = pytest.mark.integration


def test_environment_has_root_and_postfix() -> None:
    assert os.geteuid() == 0, "the Postfix tests run a throwaway Postfix and need root"
    assert shutil.which("postfix"), "Debian's postfix is missing: run scripts/install-deps.sh"

RULES = HEADER_RULES + ARCHIVE_RULE  # the header rules (probe-rules: headers only)

FILTERS = ["rules", "probe-rules"]
ENGINES = ["asyncio", "libmilter"]


def pipeline_toml(tmp: Path, use: str, extra: str = "") -> Path:
    probe = 'auth = "dkim=pass"\n' if use == "probe-rules" else ""
    text = (f'[pipeline]\nvar_dir = "{tmp}/var"\nhostname = "mx.test"\nauthserv_id = "mx.test"\n'
            f'[actions]\nadd_header = 5.0\n[[filter]]\nuse = "{use}"\n{probe}{RULES}{extra}')
    path = tmp / "pipeline.toml"
    path.write_text(text)
    return path


def message(subject: str, *extra: str) -> bytes:
    head = ["From: a@example.org", "To: b@example.net", f"Subject: {subject}", *extra]
    return ("\r\n".join(head) + "\r\n\r\nhello\r\n").encode()


@pytest.fixture(scope="module", params=[(f, e) for e in ENGINES for f in FILTERS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def stack(request, tmp_path_factory):
    use, engine = request.param
    tmp = tmp_path_factory.mktemp("milter")
    catcher = Catcher().start()
    port = free_port()
    milter = MilterProcess(pipeline_toml(tmp, use), port, workers=2, engine=engine).start()
    postfix = Postfix(catcher.port, f"inet:127.0.0.1:{port}").start()
    yield use, catcher, milter, postfix
    postfix.stop()
    milter.stop()
    catcher.stop()


def arrived(catcher: Catcher, marker: str, timeout: float = 30):
    wait_for(lambda: any(marker.encode() in m.data for m in catcher.messages), timeout, marker)
    return [m for m in catcher.messages if marker.encode() in m.data]


def test_blocked_subject_rejected_at_end_of_data(stack):
    _use, _catcher, _milter, postfix = stack
    code, text = send(postfix.port, "a@example.org", ["b@example.net"],
                      message("Please BUY NOW cheap"))
    assert (code, text) == (550, "5.7.1 Blocked by local policy")


def test_newsletter_gets_header_and_result_headers(stack):
    use, catcher, _milter, postfix = stack
    code, _ = send(postfix.port, "a@example.org", ["b@example.net"],
                   message("news", "List-Id: <news.example.org>", "X-Marker: nl-1"))
    assert code == 250
    (got,) = arrived(catcher, "X-Marker: nl-1")
    msg = Message(got.data)
    assert msg.get("X-Newsletter") == "yes"
    assert msg.get("X-Spam-Score") == "2.5"
    assert msg.get("X-Spam-Status").startswith("No, score=2.5 required=5.0 tests=NEWSLETTER")
    assert len(msg.get_all("X-Spam-Status")[0].raw.splitlines()) >= 2  # folded, intact
    if use == "probe-rules":
        # inserted at index 0: above Postfix's own Received header, folded as sent
        assert msg.headers[0].name == "Authentication-Results"
        # folded by policy.authentication_results with ";\n\t": compare unfolded
        value = " ".join(msg.get("Authentication-Results").split())
        assert value == "mx.test; dkim=pass header.from=example.org"
        assert msg.headers[1].name == "Received" and b"Postfix" in msg.headers[1].raw


def test_archive_adds_recipient(stack):
    _use, catcher, _milter, postfix = stack
    code, _ = send(postfix.port, "a@example.org", ["b@example.net"],
                   message("keep", "X-Archive: yes", "X-Marker: arch-1"))
    assert code == 250
    wait_for(lambda: sorted(r for m in arrived(catcher, "X-Marker: arch-1") for r in m.rcpts)
             == ["archive@example.net", "b@example.net"], 30, "both recipients")


def test_killed_milter_tempfails_then_recovers(stack):
    _use, catcher, milter, postfix = stack
    milter.kill9()
    data = message("while down", "X-Marker: down-1")
    code, text = send(postfix.port, "a@example.org", ["b@example.net"], data)
    assert 400 <= code < 500, (code, text)
    milter.start()
    code, _ = send(postfix.port, "a@example.org", ["b@example.net"], data)  # the client retries
    assert code == 250
    assert len(arrived(catcher, "X-Marker: down-1")) == 1


def test_dead_worker_is_replaced(stack):
    _use, catcher, milter, postfix = stack
    before = milter.worker_pids()
    assert len(before) == 2
    os.kill(before[0], 9)
    wait_for(lambda: len(set(milter.worker_pids()) - set(before)) == 1, 20, "a new worker")
    code, _ = send(postfix.port, "a@example.org", ["b@example.net"],
                   message("after restart", "X-Marker: respawn-1"))
    assert code == 250
    assert len(arrived(catcher, "X-Marker: respawn-1")) == 1


def test_kill9_mid_stream_loses_nothing_acknowledged(stack):
    _use, catcher, milter, postfix = stack
    acked: list[str] = []
    refused: list[tuple[str, int]] = []
    lock = threading.Lock()
    counter = iter(range(50))

    def client() -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            marker = f"stream-{n:02d}-{time.monotonic_ns()}"
            try:
                code, _ = send(postfix.port, "a@example.org", ["b@example.net"],
                               message(f"msg {n}", f"X-Marker: {marker}"))
            except (OSError, EOFError) as exc:  # a broken session counts as not acknowledged
                code = -1
                del exc
            with lock:
                (acked.append(marker) if code == 250 else refused.append((marker, code)))

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) + len(refused) >= 15, 60, "15 messages sent")
    milter.kill9()
    time.sleep(0.5)
    milter.start()
    for t in threads:
        t.join(120)
    assert len(acked) + len(refused) == 50
    assert acked, "nothing was accepted at all"
    assert all(400 <= code < 500 or code == -1 for _m, code in refused), refused
    wait_for(lambda: all(any(m.encode() in c.data for c in catcher.messages) for m in acked),
             60, "every acknowledged message")
    for marker in acked:
        assert len(arrived(catcher, marker)) == 1, marker


CHANGES = ["insert:X-Ins1:1:one", "insert:X-Ins3:3:three", "change:Received:1:changed",
           "change:X-B:2:", "change:X-B:1:new value", "add:X-Long::" + "word " * 30,
           "insert:X-Top:0:top", "change:X-Missing:2:added",
           # two inserts at the top push Postfix's own Received down: index 1 is above it
           "insert:X-Top2:0:top2", "insert:X-Second:1:second"]


@pytest.fixture(scope="module", params=ENGINES)
def changes_stack(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("milter-changes")
    (tmp / "dump").mkdir()
    toml = (f'[pipeline]\nvar_dir = "{tmp}/var"\nhostname = "mx.test"\nstatus_header = false\n'
            f'spam_headers = "never"\n[[filter]]\nuse = "probe-rules"\ndump = "{tmp}/dump"\n'
            f'[[filter]]\nuse = "probe-changes"\nchange = {json.dumps(CHANGES)}\n')
    (tmp / "pipeline.toml").write_text(toml)
    catcher = Catcher().start()
    port = free_port()
    milter = MilterProcess(tmp / "pipeline.toml", port, workers=1, engine=request.param).start()
    postfix = Postfix(catcher.port, f"inet:127.0.0.1:{port}").start()
    yield tmp, catcher, postfix
    postfix.stop()
    milter.stop()
    catcher.stop()


def test_header_changes_on_postfix_match_apply_changes(changes_stack):
    """The same changes through Postfix and through apply_changes give the same headers."""
    tmp, catcher, postfix = changes_stack
    data = (b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"From: a@example.org\r\nX-B: 1\r\nX-B: 2\r\nSubject: x\r\n"
            b"X-Marker: chg-1\r\nMessage-Id: <chg-1@example.org>\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n")
    assert send(postfix.port, "a@example.org", ["b@example.net"], data)[0] == 250
    (got,) = arrived(catcher, "X-Marker: chg-1")
    seen = Message(next((tmp / "dump").glob("*.eml")).read_bytes())
    expected, _env = apply_changes(seen, Envelope(), [parse(e) for e in CHANGES])
    delivered = Message(got.data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    own = [h for h in delivered.headers if h.name == "Received" and b"(Postfix)" in h.raw]
    assert len(own) == 1
    rest = [h for h in delivered.headers if h is not own[0]]
    assert b"".join(h.raw for h in rest) == expected.header_bytes
    assert [h.name for h in delivered.headers[:3]] == ["X-Top2", "X-Second", "X-Top"]
    assert delivered.headers[3] is own[0]


@pytest.mark.parametrize("engine", ["asyncio", "libmilter"])
def test_unix_socket_mode_stale_removal_and_clean_stop(tmp_path, engine):
    sock_dir = Path(f"/tmp/rp-milter-sock-{os.getpid()}")
    sock_dir.mkdir(exist_ok=True)
    path = sock_dir / "milter.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a stale socket file: nobody listens
    config = pipeline_toml(tmp_path, "probe-rules")
    log_path = tmp_path / "milter.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([os.sys.executable, str(Path(__file__).parent / "launch.py"),
                                 "milter", "-c", str(config), "--socket", f"unix:{path}",
                                 "--workers", "2", "--engine", engine],
                                stdout=log_file, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        def listening() -> bool:
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                except OSError:
                    return False
                return True

        wait_for(listening, 30, "unix socket")
        # both workers up (the socket listens in the parent before they exist)
        wait_for(lambda: log_path.read_text().count("ready") == 2, 30, "two workers")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o660, oct(mode)
        proc.terminate()
        proc.wait(30)
        out = log_path.read_text()
        assert proc.returncode == 0, out
        assert out.count("stopped") == 2, out
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_metrics_endpoint(tmp_path):
    catcher = Catcher().start()
    port, mport = free_port(), free_port()
    milter = MilterProcess(pipeline_toml(tmp_path, "probe-rules"), port, workers=2,
                           metrics=f"127.0.0.1:{mport}").start()
    postfix = Postfix(catcher.port, f"inet:127.0.0.1:{port}").start()
    try:
        assert send(postfix.port, "a@example.org", ["b@example.net"], message("m"))[0] == 250
        assert send(postfix.port, "a@example.org", ["b@example.net"], message("buy now"))[0] == 550

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                return r.read().decode()

        wait_for(lambda: 'rohrpost_messages_total{action="reject"} 1' in scrape(), 10, "metrics")
        text = scrape()
        assert 'rohrpost_messages_total{action="accept"} 1' in text
        assert 'rohrpost_filter_seconds_count{filter="probe-rules"} 2' in text
        assert 'rohrpost_filter_failures_total{filter="probe-rules"} 0' in text
        wait_for(lambda: "rohrpost_connections_active 0" in scrape(), 10, "connections closed")
    finally:
        postfix.stop()
        milter.stop()
        catcher.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("engine", ENGINES)
def test_bad_configuration_exits_78_before_listening(tmp_path, workers, engine):
    """One worker: the parent checks the pipeline in a short-lived child (and stays small);
    several: it builds the pipeline they share. Either way: 78 and the located error."""
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[[filter]]\nuse = "dkim-sign"\n'
                      'key = [{domain = "example.org", selector = "s", '
                      f'key = "{tmp_path}/missing.pem"}}]\n')
    path = tmp_path / "m.sock"
    proc = subprocess.run([os.sys.executable, str(Path(__file__).parent / "launch.py"), "milter",
                           "-c", str(config), "--socket", f"unix:{path}", "--workers", workers,
                           "--engine", engine], capture_output=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 78, proc.stderr
    assert b"pipeline.toml:5: filter[0].key[0].key: cannot read key file" in proc.stderr
    assert not path.exists()
