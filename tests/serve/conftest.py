import os

import pytest
from serve_support import PIPELINE, Catcher, ServeProcess, start_catcher


@pytest.fixture
def catcher():
    started = []

    def start(handler=None, lmtp=False):
        handler = handler or Catcher()
        controller = start_catcher(handler, lmtp=lmtp)
        started.append(controller)
        return handler, controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(*args, config=PIPELINE, use_bin=False, ready=True):
        path = tmp_path / "pipeline.toml"
        path.write_text(config)
        proc = ServeProcess(["-c", str(path), "--listen", "127.0.0.1:0", *args],
                            cwd=str(tmp_path), use_bin=use_bin)
        procs.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def maildir(tmp_path):
    path = tmp_path / "Maildir"
    os.makedirs(path)
    return path
