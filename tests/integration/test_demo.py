"""The shipped demo, ``python -m pycluster.examples.hello --workers 3 --port P``,
run as a user runs it.

Covers in one black-box run what Node's test-cluster-basic (workers listen and
serve), test-cluster-worker-death / the usual "fork on exit" recipe (a
SIGKILLed worker is replaced and serving continues) and
test-cluster-primary-kill / test-cluster-disconnect (Ctrl-C stops the primary
and leaves no worker behind) check, here with a real HTTP client under SCHED_RR.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"worker (\d+) \(pid (\d+)\) listening on 127\.0\.0\.1:(\d+)")


class Demo:
    """The demo's primary in its own session, its stdout read line by line."""

    def __init__(self, port: int, workers: int, stderr_path: Path):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYCLUSTER_SCHED_POLICY"] = "rr"
        env.pop("PYCLUSTER_WORKER_ID", None)
        self.stderr = open(stderr_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pycluster.examples.hello", "--workers", str(workers), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern, count: int = 1, timeout: float = 10) -> list[re.Match]:
        """The next `count` stdout lines matching `pattern` (fails after `timeout` s)."""
        found: list[re.Match] = []
        end = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {count} lines matching {pattern.pattern!r} in {timeout}s\n{self.output()}")
            if line is None:
                pytest.fail(f"the demo ended (rc={self.proc.poll()}) before {pattern.pattern!r}\n{self.output()}")
            self.lines.append(line)
            m = pattern.search(line)
            if m:
                found.append(m)
        return found

    def output(self) -> str:
        self.stderr.seek(0)
        return "--- stdout\n" + "\n".join(self.lines) + "\n--- stderr\n" + self.stderr.read()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)
        self.stderr.close()


@pytest.fixture
def demo(tmp_path, free_port):
    started: list[Demo] = []

    def start(workers: int) -> Demo:
        d = Demo(free_port, workers, tmp_path / "demo.stderr")
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def get(client: httpx.Client, port: int) -> tuple[int, int]:
    """(worker id, pid) of one connection-per-request GET; raises on any failure."""
    r = client.get(f"http://127.0.0.1:{port}/")
    assert r.status_code == 200
    wid = int(r.headers["x-worker"])
    assert r.text == f"hello from worker {wid}\n"
    return wid, int(r.headers["x-pid"])


def test_hello_demo_serves_replaces_and_stops(demo, free_port):
    port = free_port
    d = demo(3)
    listening = d.wait_for(LISTENING, count=3)
    assert {int(m.group(3)) for m in listening} == {port}, d.output()
    primary = psutil.Process(d.proc.pid)
    children = {c.pid: c for c in primary.children()}
    assert set(children) == {int(m.group(2)) for m in listening}, d.output()

    # 30 connection-per-request calls: round-robin over 3 workers.
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5) as client:
        answers = [get(client, port) for _ in range(30)]
        assert {pid for _, pid in answers} == set(children), d.output()
        # Round-robin: 10 each. The primary skips a worker whose last hand-off
        # it sees still waiting in the lane (SPEC 2), which on a loaded machine
        # can move one connection to the next worker (seen: 11/10/9).
        counts = {wid: sum(1 for w, _ in answers if w == wid) for wid in (1, 2, 3)}
        assert all(9 <= n <= 11 for n in counts.values()) and sum(counts.values()) == 30, \
            f"{counts}\n{d.output()}"

        # SIGKILL one worker while a client keeps calling; the primary replaces it.
        victim = int(listening[0].group(2))
        ok_after, failures = [], []
        goal: list[int | None] = [None]   # stop once this many answers were collected
        reached = threading.Event()

        def keep_calling() -> None:
            while not reached.is_set():
                try:
                    ok_after.append(get(client, port))
                except (httpx.HTTPError, AssertionError, KeyError, ValueError) as exc:
                    failures.append(repr(exc))
                if goal[0] is not None and len(ok_after) >= goal[0]:
                    reached.set()

        caller = threading.Thread(target=keep_calling, daemon=True)
        caller.start()
        os.kill(victim, signal.SIGKILL)
        d.wait_for(re.compile(r"died \(SIGKILL\); starting another"))
        replacement = d.wait_for(LISTENING)[0]
        marker = len(ok_after)
        goal[0] = marker + 30          # 30 more answers after the replacement listens
        reached.wait(10)
        reached.set()
        caller.join(10)

    new_pid = int(replacement.group(2))
    assert replacement.group(1) == "4", d.output()
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    now = {c.pid for c in primary.children()}
    assert now == (set(children) - {victim}) | {new_pid}, d.output()
    # Only the one request that may have been in flight on the killed worker may fail.
    assert len(failures) <= 1, f"{failures}\n{d.output()}"
    after = ok_after[marker:]
    assert len(after) >= 30, d.output()
    assert {pid for _, pid in after} == now, f"not all of {now} served after the replacement\n{d.output()}"

    # Ctrl-C (SIGINT to the primary): graceful stop, exit 0 within 10 s, no worker left.
    workers = [psutil.Process(pid) for pid in now]
    os.kill(d.proc.pid, signal.SIGINT)
    try:
        rc = d.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the demo did not stop within 10 s of SIGINT\n{d.output()}")
    assert rc == 0, d.output()
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"workers left running after the primary exited: {alive}\n{d.output()}"
