"""Servers in C on uvloop (issue 13 item 3, SPEC section 8).

uvicorn's default loop once ``uvicorn[standard]`` is installed is uvloop: its
``create_server`` binds through Python's ``socket.bind`` (the interception
shares the address), then ``detach()``es the socket and listens and accepts
inside libuv. Under none and reuseport the worker then hands the fd over and
says it is listening; under rr the fd is a hand-off lane libuv cannot accept
from, so the server's start fails at once with one line naming the server
and the fix, and the master halts instead of waiting for ``boot_timeout``.

The apps are run as their docs show: ``uvicorn.run(app, host, port)`` with no
loop argument (the app reports its loop's type, so the test knows uvloop is
really in use) and aiohttp's ``web.run_app`` under a uvloop event loop policy.
"""

from __future__ import annotations

import json
import time

import pytest

from cli_support import group_pids, http_get, pid_gone, pyc, unused_port, wait_until  # noqa: F401  (pyc: fixture)

pytest.importorskip("uvloop")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.timeout(60)

UVICORN_APP = """
    import asyncio
    import json
    import os

    import uvicorn

    VERSION = "{version}"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps({{"pid": os.getpid(), "version": VERSION,
                           "loop": type(asyncio.get_running_loop()).__module__}}).encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]}})
        await send({{"type": "http.response.body", "body": body}})

    def main():
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""

AIOHTTP_APP = """
    import asyncio
    import json
    import os

    import uvloop
    from aiohttp import web

    async def hello(request):
        return web.Response(text=json.dumps({"pid": os.getpid(),
                                             "loop": type(asyncio.get_running_loop()).__module__}),
                            headers={"Connection": "close"})

    def main():
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        app = web.Application()
        app.router.add_get("/", hello)
        web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
"""


def answers(port: int, want: int, timeout: float = 10.0) -> dict[int, dict]:
    """GET / until ``want`` different workers answered (the kernel picks one under
    none and reuseport); every answer is 200 and comes from a uvloop loop."""
    seen: dict[int, dict] = {}

    def more() -> bool:
        for _ in range(8):
            status, _headers, body = http_get(port)
            assert status == 200
            facts = json.loads(body)
            assert facts["loop"].startswith("uvloop"), facts
            seen[facts["pid"]] = facts
        return len(seen) >= want

    wait_until(more, timeout, f"{want} workers answering", lambda: repr(seen))
    return seen


def stop_and_check(pyc, master) -> None:
    done = pyc.cli("stop", "-n", "app", timeout=20)
    assert done.returncode == 0, done.stderr
    assert master.wait_exit(15) == 0
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")


@pytest.mark.parametrize("policy,extra", [("rr", ()), ("none", ()), ("reuseport", ()), ("none", ("--preload",)),
                                          ("rr", ("--preload",))],
                         ids=["rr", "none", "reuseport", "none-preload", "rr-preload"])
def test_uvicorn_run_with_its_default_loop_is_shared(pyc, policy, extra):
    port = unused_port()
    pyc.write("uvapp.py", UVICORN_APP.format(version="v1"))
    started = time.monotonic()
    master = pyc.start("uvapp:main", "-w", "2", "-b", f"127.0.0.1:{port}", "--policy", policy,
                       "--graceful-timeout", "3", *extra, env={"PORT": port})
    assert master.wait_ready(timeout=12) == 2
    ready_after = time.monotonic() - started
    assert ready_after < 12, f"ready after {ready_after:.1f}s"
    first = answers(port, 2)
    assert {f["version"] for f in first.values()} == {"v1"}

    pyc.write("uvapp.py", UVICORN_APP.format(version="v2"))
    done = pyc.cli("reload", "-n", "app", timeout=40)
    assert done.returncode == 0, done.stderr + master.output()
    # A listener libuv holds leaves rotation when the server handles its SIGTERM
    # (uvicorn closes it at once), not at the disconnect itself.
    wait_until(lambda: all(pid_gone(pid) for pid in first), 10, "the v1 workers gone")
    second = answers(port, 2)
    assert {f["version"] for f in second.values()} == {"v2"}
    assert not set(second) & set(first), "the reload replaced both workers"

    stop_and_check(pyc, master)


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_aiohttp_run_app_under_a_uvloop_policy(pyc, policy):
    pytest.importorskip("aiohttp")
    port = unused_port()
    pyc.write("aioapp.py", AIOHTTP_APP)
    master = pyc.start("aioapp:main", "-w", "2", "-b", f"127.0.0.1:{port}", "--policy", policy,
                       "--graceful-timeout", "3", env={"PORT": port})
    assert master.wait_ready(timeout=12) == 2
    answers(port, 2)
    stop_and_check(pyc, master)


REWRAP_APP = """
    import os
    import socket

    def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", int(os.environ["PORT"])))
        sock = socket.socket(fileno=sock.detach())  # Python keeps the fd, as ssl's wrap_socket does
        sock.listen()
        while True:
            conn, _ = sock.accept()
            conn.recv(4096)
            body = ('{"pid": %d, "loop": "uvloop-free"}' % os.getpid()).encode()
            conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
            conn.close()
"""


def test_a_socket_python_detaches_and_rewraps_keeps_its_binding_under_rr(pyc):
    port = unused_port()
    pyc.write("rewrap.py", REWRAP_APP)
    master = pyc.start("rewrap:main", "-w", "2", "-b", f"127.0.0.1:{port}", "--policy", "rr",
                       "--graceful-timeout", "3", env={"PORT": port})
    assert master.wait_ready(timeout=12) == 2
    seen = set()
    for _ in range(4):
        status, _headers, body = http_get(port)
        assert status == 200
        seen.add(json.loads(body)["pid"])
    assert len(seen) == 2, "rr spreads the hand-offs over both workers"
    stop_and_check(pyc, master)


RAW_LIBUV_APP = """
    import asyncio
    import os

    import uvloop
    import uvloop.loop

    async def serve():
        loop = asyncio.get_running_loop()
        # uvloop's own create_server, not the one a worker wraps: it binds a
        # Python socket, then libuv takes the lane
        await uvloop.loop.Loop.create_server(loop, asyncio.Protocol, "127.0.0.1", int(os.environ["PORT"]))
        await asyncio.sleep(3600)

    def main():
        uvloop.run(serve())
"""


def test_a_c_server_that_takes_an_rr_lane_fails_fast_naming_the_server_and_the_fix(pyc):
    port = unused_port()
    pyc.write("rawapp.py", RAW_LIBUV_APP)
    started = time.monotonic()
    master = pyc.run_to_end("rawapp:main", "-w", "2", "-b", f"127.0.0.1:{port}", "--policy", "rr",
                            env={"PORT": port}, timeout=20)
    elapsed = time.monotonic() - started
    assert master.proc.returncode == 3, master.output()
    text = master.output()
    assert "a server in C (uvloop/libuv) took the socket for 127.0.0.1:%d" % port in text
    assert "run with --policy none or reuseport, or uvicorn's --loop asyncio" in text
    assert "the first generation never became ready" in text
    # boot_timeout (30 s) is not what ended it
    assert elapsed < 10, f"the master took {elapsed:.1f}s to give up"
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")
