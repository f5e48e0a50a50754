"""The classic Node cluster examples, in Python, run as written (issue 2's
"done when"): http.server workers sharing a port and replaced when they die;
requests counted in the primary through messages; worker.disconnect() with a
kill timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from support import child_env, kill_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def get(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as r:
        return r.read().decode()


def try_get(port: int):
    try:
        return get(port, timeout=2.0)
    except OSError:
        return None


@pytest.fixture
def example():
    procs = []

    def start(module: str, *args, env=None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", f"pycluster.examples.{module}", *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=child_env(env), start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_group(proc)
        proc.wait(5)


def test_classic_http_shares_the_port_and_replaces_dead_workers(example):
    port = free_port()
    proc = example("classic_http", port, env={"WORKERS": 2})
    wait_for(lambda: try_get(port), what="first answer")
    answers: set = set()
    wait_for(lambda: answers.add(get(port)) or len(answers) == 2, what="both workers answering")
    assert answers == {"hello world from worker 1\n", "hello world from worker 2\n"}
    primary = psutil.Process(proc.pid)
    victim = wait_for(lambda: len(primary.children()) == 2 and primary.children()[0], what="2 workers")
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: any("worker 3" in (try_get(port) or "") for _ in range(4)), what="worker 3 serving")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"worker {victim.pid} died (SIGKILL); restarting" in out


def test_classic_count_counts_requests_in_the_primary(example):
    port = free_port()
    proc = example("classic_count", port)
    wait_for(lambda: try_get(port), what="first answer")
    for _ in range(9):
        assert get(port) == "hello world\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "requests = 10" in out.splitlines()


def test_classic_disconnect_leaves_gracefully(example):
    port = free_port()
    proc = example("classic_disconnect", port)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "worker: shutting down gracefully" in out
    assert "worker exited: code=0 signal=None voluntary=True" in out


def test_classic_disconnect_kills_a_worker_that_does_not_leave(tmp_path):
    """The kill timeout fires when the worker ignores the SIGTERM that
    follows its disconnect (here: a worker stuck with SIGTERM ignored)."""
    port = free_port()
    script = (
        "import signal, sys, runpy\n"
        "import pycluster as cluster\n"
        "if cluster.is_worker:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    import socketserver, time\n"
        "    s = socketserver.TCPServer(('127.0.0.1', int(sys.argv[1])), socketserver.StreamRequestHandler)\n"
        "    s.socket.listen()\n"
        "    while True: time.sleep(60)\n"
        "runpy.run_module('pycluster.examples.classic_disconnect', run_name='__main__')\n"
    )
    path = tmp_path / "stubborn.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env({"KILL_AFTER": "0.5"}),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, err
    assert "signal=SIGKILL voluntary=True" in out, out + err
