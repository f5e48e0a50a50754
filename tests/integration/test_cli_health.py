"""``pycluster status --check``: the health check for Docker HEALTHCHECK and
exec probes. Exit 0 when every wanted worker is ready, 1 (one line saying
which count is short) when the master answers but is not, 3 when no master
answers."""

from __future__ import annotations

import pytest

from cli_support import pyc, wait_until  # noqa: F401 (pyc is a fixture)

pytestmark = pytest.mark.timeout(60)

# A worker started while the file `hold` exists stays in its import (never ready).
HOLD_APP = """
    import os
    import threading
    import time

    while os.path.exists("hold"):
        time.sleep(0.02)

    def main():
        threading.Event().wait()
"""


def check(pyc, name="app"):
    return pyc.cli("status", "--check", "-n", name, timeout=10)


def test_status_check_is_0_when_every_wanted_worker_is_ready_1_when_short_3_without_master(pyc):
    none = check(pyc, "nosuch")
    assert none.returncode == 3, (none.stdout, none.stderr)

    pyc.write("hold_app.py", HOLD_APP)
    master = pyc.start("hold_app:main", "-w", "1")
    master.wait_ready()
    ok = check(pyc)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert len(ok.stdout.splitlines()) <= 1 and not ok.stderr, (ok.stdout, ok.stderr)
    assert "1 of 1 worker ready" in ok.stdout, ok.stdout

    (pyc.dir / "hold").write_text("")
    assert pyc.cli("scale", "-n", "app", "2").returncode == 0
    master.wait_status(lambda st: len(st["workers"]) == 2 and st["workers"][1]["pid"], 10, "a second worker")
    short = check(pyc)
    assert short.returncode == 1, (short.stdout, short.stderr)
    assert short.stderr.count("\n") == 1 and "1 of 2 workers ready" in short.stderr, short.stderr
    assert short.stdout == ""

    (pyc.dir / "hold").unlink()
    wait_until(lambda: check(pyc).returncode == 0, 15, "status --check to pass once the worker is ready",
               master.output)

    assert pyc.cli("scale", "-n", "app", "0").returncode == 0
    paused = check(pyc)
    assert paused.returncode == 1 and "0 workers wanted" in paused.stderr, (paused.stdout, paused.stderr)


def test_status_check_fails_while_the_master_stops(pyc):
    pyc.write("hold_app.py", HOLD_APP)
    pyc.write("stubborn.py", """
        import signal
        import threading

        def main():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            threading.Event().wait()
    """)
    master = pyc.start("stubborn:main", "-w", "1", "--graceful-timeout", "20")
    master.wait_ready()
    assert master.request({"cmd": "stop"})["ok"]
    master.wait_status(lambda st: st["state"] == "stopping", 5, "the master stopping")
    stopping = check(pyc)
    assert stopping.returncode == 1 and "stopping" in stopping.stderr, (stopping.stdout, stopping.stderr)
