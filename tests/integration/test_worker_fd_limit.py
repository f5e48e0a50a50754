"""rr hand-offs to a worker out of file descriptors (issue 12, item 8).

A connection handed to a worker that has no descriptor left would be cut by
the kernel (MSG_CTRUNC) and its client reset. The worker keeps one
descriptor in reserve for each hand-off; without one it fails its accept with
EMFILE, as a plain accept() does (asyncio logs it and retries), and the
connection stays in the lane until the primary gives it to a worker that can
take it. Under ``wrk -c100`` with connection-per-request load against two
workers limited to 64 descriptors: no connection reset, and the shortage is
in the log.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cli_support import pyc  # noqa: F401  (fixture)

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")]

LOW_FD_APP = """
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    from pycluster.examples.hello import main
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_no_connection_is_reset_when_workers_run_out_of_descriptors(pyc, free_port, policy):
    pyc.write("lowfd.py", LOW_FD_APP)
    master = pyc.start("lowfd:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--policy", policy,
                       name=f"lowfd-{policy}")
    assert master.wait_ready(20) == 2
    out = subprocess.run(["wrk", "-t2", "-c100", "-d3s", "--timeout", "10s", "-H", "Connection: close",
                          f"http://127.0.0.1:{free_port}/"], capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"\d+ requests in", out), out
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    resets = sum(int(x) for x in errors.groups()) if errors else 0
    assert resets == 0, f"connections were reset:\n{out}\n{master.output()}"
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, out
    master.wait_line(r"\[worker \d\].*(Too many open files|out of system resource)", 10)
    assert master.status()["state"] == "running"


LOW_FD_UVLOOP_APP = """
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
"""


def test_a_served_app_on_uvloop_out_of_descriptors_pauses_instead_of_spinning(pyc, free_port):
    """Under rr, uvloop's wrapped create_server takes hand-offs from Python
    (child/uvloop_lanes.py). When taking one fails (EMFILE) the lane stays
    readable: the worker pauses for a second, as asyncio's accept loop does,
    instead of retrying at once, which logged the failure thousands of times
    a second and kept the worker at 100% CPU. No connection is reset."""
    pytest.importorskip("uvloop")
    pytest.importorskip("uvicorn")
    pyc.write("lowfd_asgi.py", LOW_FD_UVLOOP_APP)
    master = pyc.start("lowfd_asgi:app", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--policy", "rr",
                       name="lowfd-uvloop")
    assert master.wait_ready(20) == 2
    out = subprocess.run(["wrk", "-t2", "-c100", "-d3s", "--timeout", "10s", "-H", "Connection: close",
                          f"http://127.0.0.1:{free_port}/"], capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"\d+ requests in", out), out
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    assert not errors or sum(int(x) for x in errors.groups()) == 0, f"connections were reset:\n{out}"
    failures = sum("cannot take a connection" in line for line in master.stdout)
    # at most one failure per worker per paused second (3 s of load, 2 workers), with slack
    assert 1 <= failures <= 20, f"{failures} failed takes logged\n{master.output()[-3000:]}"
