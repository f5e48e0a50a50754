"""Requests in flight survive a reload or a stop for servers without a SIGTERM
handler (SPEC 2, the disconnect paragraph).

Flask's development server (``app.run(threaded=True)``, werkzeug's
``run_simple``) installs no SIGTERM handler and serves each connection on a
daemon thread: pycluster's default handler must let the connections the
worker accepted finish before it exits 0, and a worker that accepted nothing
must exit at once.
"""

from __future__ import annotations

import threading
import time

import pytest

from cli_support import InFlight, group_pids, http_get, pid_gone, pyc, wait_until  # noqa: F401

pytest.importorskip("flask")

pytestmark = pytest.mark.timeout(60)

SLOW = 3.0  # seconds each in-flight request takes
BODY = b"x" * 100_000  # sent in full only if the worker lives to the end of the request

FLASK_APP = r"""
    import os
    import sys
    import time

    from flask import Flask

    app = Flask(__name__)
    BODY = b"x" * 100_000

    @app.route("/")
    def slow():
        sys.stdout.write("request started\n")  # one write: the serving threads share the line buffer
        sys.stdout.flush()
        time.sleep(float(os.environ["SLOW"]))
        return BODY

    def main():
        app.run("127.0.0.1", int(os.environ["PORT"]), threaded=True)
"""


def _start(pyc, port: int, *args: str):
    pyc.write("flaskapp.py", FLASK_APP)
    master = pyc.start("flaskapp:main", "-w", "2", *args, env={"PORT": port, "SLOW": SLOW})
    assert master.wait_ready() == 2
    return master


def _four_in_flight(master, port: int) -> InFlight:
    def count() -> int:
        return sum(line.count("request started") for line in list(master.stdout))

    started = count()
    requests = InFlight(port, 4, SLOW)
    wait_until(lambda: count() >= started + 4, 10,
               "4 requests in the app's handler", master.output)
    return requests


def _assert_all_served(requests: InFlight, master) -> None:
    results = requests.join()
    assert len(results) == 4, results
    for result in results:
        assert not isinstance(result, BaseException), f"{result!r}\n{master.output()}"
        assert result == (200, BODY), f"{result[0]} with {len(result[1])} bytes\n{master.output()}"


def test_reload_lets_in_flight_requests_finish(pyc, free_port):
    master = _start(pyc, free_port)
    old = set(group_pids(master.pid)) - {master.pid}
    requests = _four_in_flight(master, free_port)
    reload = pyc.cli("reload", "-n", "app", timeout=30)
    assert reload.returncode == 0, reload.stdout + reload.stderr
    _assert_all_served(requests, master)
    wait_until(lambda: all(pid_gone(pid) for pid in old), 10, "the old workers gone", master.output)
    assert http_get(free_port, timeout=SLOW + 5)[0] == 200  # the new generation serves
    stop = pyc.cli("stop", "-n", "app", timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert master.wait_exit(10) == 0
    assert group_pids(master.pid) == []


def test_stop_lets_in_flight_requests_finish(pyc, free_port):
    master = _start(pyc, free_port)
    requests = _four_in_flight(master, free_port)
    stop = pyc.cli("stop", "-n", "app", timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    _assert_all_served(requests, master)
    assert master.wait_exit(10) == 0
    assert group_pids(master.pid) == []
    assert "SIGKILL" not in master.output(), master.output()


def test_a_worker_that_accepted_nothing_exits_at_once(pyc, free_port):
    master = _start(pyc, free_port, "--graceful-timeout", "30")
    begun = time.monotonic()
    stop = pyc.cli("stop", "-n", "app", timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert master.wait_exit(10) == 0
    assert time.monotonic() - begun < 5, master.output()


def test_a_worker_whose_connections_closed_exits_at_once(pyc, free_port):
    # Served and closed (Connection: close) before the stop: nothing to wait for.
    master = _start(pyc, free_port, "--graceful-timeout", "30")
    requests = _four_in_flight(master, free_port)
    _assert_all_served(requests, master)
    begun = time.monotonic()
    stop = pyc.cli("stop", "-n", "app", timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert master.wait_exit(10) == 0
    assert time.monotonic() - begun < 5, master.output()
