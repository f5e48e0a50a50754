"""Served apps (SPEC 8, issue 13 item 1 and 2): what ``pycluster run module:attr``
does with an ASGI app, a WSGI app, a factory, and with what is neither.

The framework matrix (FastAPI, Flask, Django, ... x rr / none / --preload,
reload under load) is tests/integration/test_frameworks.py; this module checks
the serving layer itself on small plain apps: detection and its one-line
errors, the settings (access log, root path, proxy headers, --factory), and
the drain seen from a kept-alive connection.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import pytest

from cli_support import group_pids, http_get, pid_gone, pyc, unused_port, wait_until  # noqa: F401

pytest.importorskip("uvicorn")
pytest.importorskip("cheroot")

pytestmark = pytest.mark.timeout(60)

APPS = """
    import asyncio
    import json
    import os
    import time

    VERSION = "{version}"

    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({{"type": "lifespan.startup.complete"}})
                elif message["type"] == "lifespan.shutdown":
                    await send({{"type": "lifespan.shutdown.complete"}})
                    return
        if scope["path"] == "/slow":
            await asyncio.sleep(1.5)
        body = json.dumps({{"pid": os.getpid(), "version": VERSION, "path": scope["path"],
                           "root_path": scope.get("root_path", ""),
                           "client": scope["client"][0], "scheme": scope["scheme"]}}).encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]}})
        await send({{"type": "http.response.body", "body": body}})

    def wsgi(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(1.5)
        body = json.dumps({{"pid": os.getpid(), "version": VERSION, "path": environ["PATH_INFO"],
                           "root_path": environ.get("SCRIPT_NAME", ""),
                           "client": environ["REMOTE_ADDR"], "scheme": environ["wsgi.url_scheme"]}}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def make_asgi():
        return asgi

    def make_wsgi():
        return wsgi

    def run_uvicorn():
        import uvicorn
        uvicorn.run(asgi, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")

    def run_hypercorn():
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
        config = Config()
        config.bind = ["127.0.0.1:" + os.environ["PORT"]]
        asyncio.run(serve(asgi, config))

    def run_aiohttp():
        from aiohttp import web

        async def handle(request):
            if request.path == "/slow":
                await asyncio.sleep(1.5)
            return web.json_response({{"pid": os.getpid(), "version": VERSION, "path": request.path}})
        app = web.Application()
        app.router.add_get("/{{tail:.*}}", handle)
        web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)

    NOT_AN_APP = 42

    def takes_one(request):
        return None
"""

SERVED = ["asgi", "wsgi"]


def stop_and_check(pyc, master) -> None:
    done = pyc.cli("stop", "-n", "app", timeout=20)
    assert done.returncode == 0, done.stderr
    assert master.wait_exit(15) == 0
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")


def get(port: int, path: str = "/", headers: dict | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("attr", SERVED)
def test_factory_is_called_and_its_app_served(pyc, attr):
    port = unused_port()
    pyc.write("apps.py", APPS.format(version="v1"))
    master = pyc.start(f"apps:make_{attr}", "--factory", "-w", "1", "-b", f"127.0.0.1:{port}",
                       "--graceful-timeout", "5")
    assert master.wait_ready(timeout=15) == 1
    status, _headers, body = get(port)
    assert status == 200 and body["version"] == "v1"
    stop_and_check(pyc, master)


@pytest.mark.parametrize("attr", SERVED)
def test_access_log_root_path_and_proxy_headers(pyc, attr):
    port = unused_port()
    pyc.write("apps.py", APPS.format(version="v1"))
    master = pyc.start(f"apps:{attr}", "-w", "1", "-b", f"127.0.0.1:{port}", "--access-log",
                       "--root-path", "/api", "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1",
                       "--graceful-timeout", "5")
    assert master.wait_ready(timeout=15) == 1
    # the proxy in front strips the prefix (uvicorn's --root-path, gunicorn's SCRIPT_NAME)
    status, _headers, body = get(port, "/items?x=1", {"X-Forwarded-For": "203.0.113.9",
                                                          "X-Forwarded-Proto": "https"})
    assert status == 200
    assert body["root_path"] == "/api"
    assert body["client"] == "203.0.113.9" and body["scheme"] == "https"
    line = master.wait_line(r'"GET /api/items\?x=1 HTTP/1\.1" 200 [0-9.]+ms')
    assert "203.0.113.9" in line.group(0) or "203.0.113.9" in master.output()
    stop_and_check(pyc, master)


@pytest.mark.parametrize("attr", SERVED)
def test_untrusted_proxy_headers_are_ignored(pyc, attr):
    port = unused_port()
    pyc.write("apps.py", APPS.format(version="v1"))
    master = pyc.start(f"apps:{attr}", "-w", "1", "-b", f"127.0.0.1:{port}", "--proxy-headers",
                       "--forwarded-allow-ips", "10.0.0.0/8", "--graceful-timeout", "5")
    assert master.wait_ready(timeout=15) == 1
    _status, _headers, body = get(port, "/", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert body["client"] == "127.0.0.1" and body["scheme"] == "http"
    stop_and_check(pyc, master)


@pytest.mark.parametrize("target,expected", [
    ("apps:NOT_AN_APP", "'apps:NOT_AN_APP' is an int (builtins.int), not callable"),
    ("apps:takes_one", "'apps:takes_one' is a callable taking (request): not an ASGI app"),
    ("apps:asgi --interface wsgi --factory", "not a factory"),
])
def test_a_target_that_is_no_app_exits_2_with_one_line(pyc, target, expected):
    pyc.write("apps.py", APPS.format(version="v1"))
    port = unused_port()
    started = time.monotonic()
    master = pyc.run_to_end(*target.split(), "-w", "2", "-b", f"127.0.0.1:{port}", timeout=20)
    assert master.proc.returncode == 2, master.output()
    err = master.stderr_text() if hasattr(master, "stderr_text") else master.output()
    assert expected in err
    assert "Traceback" not in master.output()
    assert time.monotonic() - started < 10
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")


def test_a_missing_extra_names_the_pip_command(pyc, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvicorn.py").write_text("raise ImportError(\"No module named 'uvicorn'\")\n")
    pyc.write("apps.py", APPS.format(version="v1"))
    port = unused_port()
    for extra in ((), ("--preload",)):
        master = pyc.run_to_end("apps:asgi", "-w", "1", "-b", f"127.0.0.1:{port}", *extra,
                                env={"PYTHONPATH": f"{shadow}:" + pyc.env()["PYTHONPATH"]}, timeout=20)
        assert master.proc.returncode == 2, master.output()
        assert "needs uvicorn" in master.output() and "pip install 'pycluster[asgi]'" in master.output()
        assert "Traceback" not in master.output()


class KeptAlive:
    """One HTTP/1.1 connection issuing GETs; records each response's Connection header."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path: str = "/") -> tuple[int, str, dict]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        return resp.status, (resp.getheader("connection") or "").lower(), body


@pytest.mark.parametrize("attr", [*SERVED, "run_uvicorn", "run_hypercorn", "run_aiohttp"])
@pytest.mark.parametrize("policy", ["rr", "none"])
def test_a_draining_worker_answers_kept_alive_connections_with_connection_close(pyc, attr, policy):
    """Reload: an open keep-alive connection to an old worker gets its next
    answer from that worker, with ``Connection: close``, and a slow request in
    flight on another connection completes; then the old worker exits. The
    same for ``uvicorn.run()``, hypercorn's ``serve()`` and aiohttp's ``run_app`` called by the app
    (serve/adapters.py): their own shutdown would close the idle connection at once."""
    if attr in ("run_hypercorn", "run_aiohttp"):
        pytest.importorskip(attr.removeprefix("run_"))
    port = unused_port()
    pyc.write("apps.py", APPS.format(version="v1"))
    keep_alive = ("--keep-alive", "30") if attr in SERVED else ()
    master = pyc.start(f"apps:{attr}", "-w", "1", "-b", f"127.0.0.1:{port}", "--policy", policy,
                       *keep_alive, "--graceful-timeout", "20", env={"PORT": port})
    assert master.wait_ready(timeout=15) == 1
    client = KeptAlive(port)
    status, connection, body = client.get()
    assert status == 200 and connection != "close"
    old = body["pid"]
    slow: list = []
    slow_thread = threading.Thread(target=lambda: slow.append(get(port, "/slow")), daemon=True)
    slow_thread.start()
    pyc.write("apps.py", APPS.format(version="v2"))
    reload = pyc.cli_start("reload", "-n", "app")
    master.wait_line(r"ready \(generation 2\)", timeout=20)
    master.wait_line(r"\[worker 1\] pycluster: draining", timeout=10)
    # The old worker is out of rotation but still has our connection open.
    assert not pid_gone(old)
    status, connection, body = client.get()
    assert (status, connection, body["pid"], body["version"]) == (200, "close", old, "v1")
    slow_thread.join(10)
    assert slow and slow[0][0] == 200 and slow[0][2]["pid"] == old
    assert pyc.finish(reload, 30).returncode == 0
    wait_until(lambda: pid_gone(old), 10, "the old worker gone")
    status, _headers, body = get(port)
    assert body["version"] == "v2"
    stop_and_check(pyc, master)


FLAKY_APP = """
    import os
    import sys
    import threading

    import pycluster

    def main():
        pycluster.listeners()
        if os.path.exists("no-app"):
            sys.exit(64)  # what a worker whose target is no app exits with
        threading.Event().wait()
"""


def test_a_usage_exit_after_the_first_generation_is_a_crash_not_a_halt(pyc):
    """Exit 64 halts `run` only for the first generation; a replacement that exits 64
    while the cluster serves (code changed on disk, or an app's own exit status) is
    restarted like any crash, and the cluster keeps running."""
    port = unused_port()
    pyc.write("flaky.py", FLAKY_APP)
    master = pyc.start("flaky:main", "-w", "2", "-b", f"127.0.0.1:{port}", "--min-uptime", "0",
                       "--restart-delay", "0.05", "--max-restart-delay", "0.2")
    assert master.wait_ready(timeout=15) == 2
    (pyc.dir / "no-app").write_text("")
    victim = master.status()["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    master.wait_line(r"exited with code 64", timeout=10)
    assert master.proc.poll() is None, master.output()
    (pyc.dir / "no-app").unlink()
    wait_until(lambda: master.status()["workers"] and all(w.get("ready") for w in master.status()["workers"])
               and len(master.status()["workers"]) == 2, 15, "2 ready workers again", master.output)
    stop_and_check(pyc, master)
