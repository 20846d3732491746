"""pipe: delivery: argv without a shell, environment, exit status mapping, timeouts."""

import os
import sys
import time

import pytest

from rohrpost.deliver import Destination, deliver, parse_destination
from rohrpost.deliver.pipe import reply_for_status
from rohrpost.envelope import Envelope

PY = sys.executable
ENV = Envelope(mail_from="s@x", rcpts=("r1@y", "r2@y"), client_ip="192.0.2.1", helo="mx.x")


def py(code, *args):
    return Destination("pipe", argv=(PY, "-c", code, *args))


@pytest.mark.parametrize(
    ("status", "code", "enhanced", "exit_code"),
    [
        (0, 250, "2.0.0", 0),
        (75, 451, "4.3.0", 75),
        (71, 451, "4.3.0", 75),
        (67, 550, "5.1.1", 67),
        (77, 550, "5.7.1", 77),
        (1, 554, "5.3.0", 69),
        (2, 554, "5.3.0", 69),
        (78, 554, "5.3.0", 69),
        (69, 554, "5.3.0", 69),
    ],
)
def test_exit_status_mapping(status, code, enhanced, exit_code):
    report = deliver(py(f"import sys; sys.stdin.buffer.read(); sys.exit({status})"), b"x\n", ENV)
    assert [(o.reply.code, o.reply.enhanced) for o in report.outcomes] == [(code, enhanced)] * 2
    assert [o.rcpt for o in report.outcomes] == ["r1@y", "r2@y"]
    assert report.exit_code == exit_code


def test_signal_is_temporary():
    report = deliver(py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"), b"x", ENV)
    assert report.temporary and "signal 15" in report.outcomes[0].reply.text
    assert reply_for_status(-9, "").code == 451


def test_stdin_and_environment(tmp_path):
    out = tmp_path / "out"
    code = ("import os, sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read() + b'|' + "
            "'|'.join(os.environ.get(k, '-') for k in ('SENDER', 'RECIPIENT', 'CLIENT_ADDRESS',"
            " 'CLIENT_HELO', 'SECRET_TEST_VAR')).encode())")
    os.environ["SECRET_TEST_VAR"] = "leak"
    try:
        report = deliver(py(code, str(out)), b"From x\nSubject: s\r\n\r\nb\r\n", ENV)
    finally:
        del os.environ["SECRET_TEST_VAR"]
    assert report.ok
    # the message goes to the command unchanged (procmail wants the From_ line, if any)
    assert out.read_bytes() == b"From x\nSubject: s\r\n\r\nb\r\n|s@x|r1@y|192.0.2.1|mx.x|-"


def test_no_shell_argument_passed_literally(tmp_path):
    marker = tmp_path / "x"
    out = tmp_path / "argv"
    dest = parse_destination(
        f"pipe:{PY} -c 'import sys; open(sys.argv[1], \"w\").write(repr(sys.argv[2:]))' "
        f"{out} '$(touch {marker})' ';' 'touch {marker}' '`touch {marker}`'")
    report = deliver(dest, b"x\n", Envelope())
    assert report.ok, report.summary
    assert [o.rcpt for o in report.outcomes] == [""]
    assert not marker.exists()
    assert out.read_text() == repr([f"$(touch {marker})", ";", f"touch {marker}",
                                    f"`touch {marker}`"])


def test_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    start = time.monotonic()
    report = deliver(py(code), b"x\n", ENV, timeout=1.0)
    assert time.monotonic() - start < 10
    reply = report.outcomes[0].reply
    assert (reply.code, reply.enhanced) == (451, "4.4.7") and report.exit_code == 75
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "grandchild survived the timeout"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stderr_first_line_in_detail_sanitized():
    code = ("import sys; sys.stderr.write('\\n  5.1.1 no such user \\x1b[31mred\\r\\nsecond\\n'); "
            "sys.exit(67)")
    report = deliver(py(code), b"x\n", ENV)
    text = report.outcomes[0].reply.text
    assert text == "unknown user: 5.1.1 no such user  [31mred"
    assert report.detail.endswith(": 550 5.1.1 unknown user: 5.1.1 no such user [31mred")


def test_command_not_found_is_temporary(tmp_path):
    report = deliver(Destination("pipe", argv=(str(tmp_path / "nope"),)), b"x\n", ENV)
    assert report.temporary and report.outcomes[0].reply.enhanced == "4.3.5"


def test_command_ignoring_stdin_with_big_message():
    report = deliver(py("import sys; sys.exit(0)"), b"x" * 5_000_000, ENV)
    assert report.ok
