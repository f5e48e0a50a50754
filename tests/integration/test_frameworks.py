"""The frameworks people bring, run as their docs show, under rr / none / --preload
(issue 13 item 6, SPEC section 8).

Served apps (``pycluster run main:app``: FastAPI, Flask, Django WSGI and ASGI)
and self-run stacks (``module:main`` that calls aiohttp's ``web.run_app``,
tornado, hypercorn, Flask's ``app.run``, ``uvicorn.run`` with its default
loop, Django's ``runserver --noreload``). Each case starts 2 workers, sees both answer, optionally reloads to new
code, then stops with two slow requests in flight, which must both be answered
in full, and leaves no process behind.

A reload of a served app runs under a keep-alive load (client threads, one
HTTP/1.1 connection each, reconnecting when the server answers
``Connection: close``) and must fail no request: SPEC section 8 promises it for
served apps. The reload of a self-run stack is only checked to bring the new
code: SPEC section 8 promises no error-free reload under keep-alive load for
a server pycluster does not run.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

import pytest

from cli_support import InFlight, ThreadedLoad, group_pids, pid_gone, pyc, unused_port, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(60)

SLOW = 1.5  # seconds the slow endpoint sleeps
SLOW_BODY = "slow-done:" + "x" * 50_000  # answered in full only if the worker lives to the end
STARTED = "slow request started"
WORKERS = 2
LOAD_THREADS = 4
# The new code's version string differs in length from the old one's, so its size alone tells
# Python that a cached .pyc is stale (the mtime it also compares has a resolution of 1 s).
OLD, NEW = "v1", "v2-new-code"

# -- the apps ----------------------------------------------------------------------------------------
# Every app answers GET / with JSON {"pid", "version"} and GET /slow with SLOW_BODY after SLOW
# seconds, printing STARTED first (one write, flushed). {version} is filled in by the test.

COMMON = f"""
import os
SLOW = {SLOW!r}
SLOW_BODY = {SLOW_BODY[:10]!r} + "x" * {len(SLOW_BODY) - 10}
VERSION = "{{version}}"  # filled in by the test
PORT = int(os.environ.get("PORT", "0"))

def facts():
    return dict(pid=os.getpid(), version=VERSION)

def started():
    print({STARTED!r}, flush=True)
"""

FASTAPI_APP = COMMON + """
import asyncio

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()

@app.get("/")
async def index():
    return facts()

@app.get("/slow", response_class=PlainTextResponse)
async def slow():
    started()
    await asyncio.sleep(SLOW)
    return SLOW_BODY

def main():  # FastAPI's docs: uvicorn.run, its default loop (uvloop with uvicorn[standard])
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
"""

FLASK_APP = COMMON + """
import time

from flask import Flask

app = Flask(__name__)

@app.route("/")
def index():
    return facts()

@app.route("/slow")
def slow():
    started()
    time.sleep(SLOW)
    return SLOW_BODY

def main():  # the development server (werkzeug), threaded
    app.run("127.0.0.1", PORT, threaded=True)
"""

AIOHTTP_APP = COMMON + """
import asyncio

from aiohttp import web

async def index(request):
    return web.json_response(facts())

async def slow(request):
    started()
    await asyncio.sleep(SLOW)
    return web.Response(text=SLOW_BODY)

def main():
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/slow", slow)
    web.run_app(app, host="127.0.0.1", port=PORT, print=None)
"""

TORNADO_APP = COMMON + """
import asyncio

import tornado.web

class Index(tornado.web.RequestHandler):
    def get(self):
        self.write(facts())

class Slow(tornado.web.RequestHandler):
    async def get(self):
        started()
        await asyncio.sleep(SLOW)
        self.write(SLOW_BODY)

async def serve():
    app = tornado.web.Application([(r"/", Index), (r"/slow", Slow)])
    app.listen(PORT, address="127.0.0.1")
    await asyncio.Event().wait()

def main():
    asyncio.run(serve())
"""

HYPERCORN_APP = COMMON + """
import asyncio
import json

from hypercorn.asyncio import serve
from hypercorn.config import Config

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        started()
        await asyncio.sleep(SLOW)
        body, kind = SLOW_BODY.encode(), b"text/plain"
    else:
        body, kind = json.dumps(facts()).encode(), b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

def main():  # hypercorn's programmatic API, as its docs show it
    config = Config()
    config.bind = [f"127.0.0.1:{PORT}"]
    asyncio.run(serve(app, config))
"""

# A minimal Django project: settings, one URLconf, the views; wsgi.py and asgi.py as startproject writes them.
DJANGO_FILES = {
    "mysite/__init__.py": "",
    "mysite/settings.py": """
SECRET_KEY = "pycluster-test-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
""",
    "mysite/urls.py": """
from django.urls import path

from mysite import views

urlpatterns = [path("", views.index), path("slow", views.slow)]
""",
    "mysite/views.py": COMMON + """
import asyncio

from django.http import HttpResponse, JsonResponse

def index(request):
    return JsonResponse(facts())

async def slow(request):  # async: under ASGI sync views share one thread
    started()
    await asyncio.sleep(SLOW)
    return HttpResponse(SLOW_BODY, content_type="text/plain")
""",
    "mysite/wsgi.py": """
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
""",
    "mysite/asgi.py": """
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_asgi_application()
""",
}


@dataclass
class Stack:
    """One framework as a user runs it: the files to write, the run target, the packages it needs."""
    files: dict[str, str]  # path -> source, "{version}" (in COMMON) filled in
    target: str
    needs: tuple[str, ...]

    def write(self, pyc, version: str) -> None:
        for path, text in self.files.items():
            (pyc.dir / path).parent.mkdir(parents=True, exist_ok=True)
            (pyc.dir / path).write_text(text.replace("{version}", version))


def _stack(name: str, text: str, target: str, needs: tuple[str, ...]) -> Stack:
    return Stack({name: text}, target, needs)


# Django's development server, as `python manage.py runserver --noreload` runs it (no autoreloader:
# pycluster's reload replaces the workers).
DJANGO_RUNSERVER = {**DJANGO_FILES, "manage_run.py": COMMON + """
def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(["manage.py", "runserver", "--noreload", f"127.0.0.1:{PORT}"])
"""}

SERVED = {  # served by pycluster (SPEC 8)
    "fastapi": _stack("main.py", FASTAPI_APP, "main:app", ("fastapi", "uvicorn")),
    "flask": _stack("app.py", FLASK_APP, "app:app", ("flask", "cheroot")),
    "django-wsgi": Stack(DJANGO_FILES, "mysite.wsgi:application", ("django", "cheroot")),
    "django-asgi": Stack(DJANGO_FILES, "mysite.asgi:application", ("django", "uvicorn")),
}
SELF_RUN = {  # running their own server
    "uvicorn.run": _stack("main.py", FASTAPI_APP, "main:main", ("fastapi", "uvicorn", "uvloop")),
    "flask-app.run": _stack("app.py", FLASK_APP, "app:main", ("flask",)),
    "aiohttp": _stack("aioapp.py", AIOHTTP_APP, "aioapp:main", ("aiohttp",)),
    "tornado": _stack("tornadoapp.py", TORNADO_APP, "tornadoapp:main", ("tornado",)),
    "hypercorn": _stack("hyperapp.py", HYPERCORN_APP, "hyperapp:main", ("hypercorn",)),
    "django-runserver": Stack(DJANGO_RUNSERVER, "manage_run:main", ("django",)),
}
STACKS = {**SERVED, **SELF_RUN}

MODES = {"rr": ("--policy", "rr"), "none": ("--policy", "none"), "preload": ("--policy", "rr", "--preload")}

# Where each case reloads: "load" = under keep-alive load, 0 failed requests asserted (served apps, SPEC 8);
# "plain" = to new code, no load. Every other cell checks start, spread and stop only (the suite's budget).
RELOAD = {
    ("fastapi", "rr"): "load", ("fastapi", "none"): "load", ("fastapi", "preload"): "load",
    ("flask", "rr"): "load", ("flask", "none"): "load", ("flask", "preload"): "load",
    ("django-wsgi", "rr"): "load", ("django-asgi", "preload"): "load",
    ("uvicorn.run", "none"): "plain", ("flask-app.run", "preload"): "plain",
    ("aiohttp", "rr"): "plain", ("tornado", "none"): "plain", ("hypercorn", "preload"): "plain",
    ("django-runserver", "rr"): "plain",
}


# -- clients -----------------------------------------------------------------------------------------

def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on its own connection (Connection: close) -> (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def facts_of(status: int, body: bytes) -> dict:
    assert status == 200, (status, body[:300])
    facts = json.loads(body)
    assert set(facts) == {"pid", "version"}, facts
    return facts


def spread(port: int, version: str, master, timeout: float = 10.0) -> set[int]:
    """GET / until both workers answered; every answer is a 200 from ``version``."""
    seen: dict[int, dict] = {}

    def more() -> bool:
        for _ in range(8):
            facts = facts_of(*get(port))
            assert facts["version"] == version, f"{facts}\n{master.output()}"
            seen[facts["pid"]] = facts
        return len(seen) >= WORKERS

    wait_until(more, timeout, f"{WORKERS} workers answering", lambda: f"{seen}\n{master.output()}")
    return set(seen)


class KeepAliveLoad(ThreadedLoad):
    """``threads`` clients, each GETting / in a loop on one HTTP/1.1 connection; when the
    server answers Connection: close, the next request opens a new one. Any exception or
    any answer that is not a 200 with the app's JSON counts as a failure (no retry)."""

    def __init__(self, port: int, threads: int = LOAD_THREADS):
        super().__init__(threads)
        self.port = port
        self.ok = 0
        self.reconnects = 0
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            while not self.stop.is_set():
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read()
                    facts = facts_of(resp.status, body)
                    closing = resp.will_close
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    with self.lock:
                        self.failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    continue
                with self.lock:
                    self.ok += 1
                    self.versions[facts["version"]] = self.versions.get(facts["version"], 0) + 1
                    if closing:
                        self.reconnects += 1
                if closing:  # http.client reopens on the next request; do it explicitly
                    conn.close()
        finally:
            conn.close()

    def count(self) -> int:
        with self.lock:
            return self.ok

    def summary(self) -> str:
        with self.lock:
            return (f"{self.ok} ok, {len(self.failures)} failed, {self.reconnects} Connection: close, "
                    f"versions {self.versions}; first failures {self.failures[:5]}")


# -- the matrix --------------------------------------------------------------------------------------

def _cases():
    for name, stack in STACKS.items():
        for mode in MODES:
            marks = [pytest.mark.timeout(90)] if RELOAD.get((name, mode)) == "load" else []
            yield pytest.param(name, mode, id=f"{name}-{mode}", marks=marks)


@pytest.mark.parametrize("name,mode", list(_cases()))
def test_framework(pyc, name, mode):
    stack = STACKS[name]
    for module in stack.needs:
        pytest.importorskip(module)
    port = unused_port()
    stack.write(pyc, OLD)
    master = pyc.start(stack.target, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", *MODES[mode],
                       "--graceful-timeout", "10", env={"PORT": port})
    assert master.wait_ready(timeout=20) == WORKERS

    first = spread(port, OLD, master)

    reload = RELOAD.get((name, mode))
    if reload:
        stack.write(pyc, NEW)
        if reload == "load":
            with KeepAliveLoad(port) as load:
                wait_until(lambda: load.count() >= 50, 10, "the load running", load.summary)
                done = pyc.cli("reload", "-n", "app", timeout=40)
                assert done.returncode == 0, done.stdout + done.stderr + master.output()
                wait_until(lambda: all(pid_gone(pid) for pid in first), 15, "the old workers gone",
                           lambda: load.summary() + "\n" + master.output())
                after = load.count()
                wait_until(lambda: load.count() >= after + 50, 10, "the load served by the new workers", load.summary)
            assert not load.failures, f"{load.summary()}\n{master.output()}"
            assert load.versions.get(NEW), load.summary()
            # every client connection was on a v1 worker, which closed it with Connection: close
            assert load.reconnects >= LOAD_THREADS, load.summary()
        else:
            done = pyc.cli("reload", "-n", "app", timeout=40)
            assert done.returncode == 0, done.stdout + done.stderr + master.output()
            wait_until(lambda: all(pid_gone(pid) for pid in first), 15, "the old workers gone", master.output)
        second = spread(port, NEW, master)
        assert not second & first, "the reload replaced both workers"

    # stop with two slow requests in flight: both are answered in full
    def count() -> int:
        return sum(line.count(STARTED) for line in list(master.stdout))

    requests = InFlight(port, 2, SLOW, "/slow")
    wait_until(lambda: count() >= 2, 10, "2 slow requests in the app's handler", master.output)
    stop = pyc.cli("stop", "-n", "app", timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr + master.output()
    results = requests.join()
    assert len(results) == 2, results
    for result in results:
        assert not isinstance(result, BaseException), f"{result!r}\n{master.output()}"
        assert result[0] == 200 and result[1] == SLOW_BODY.encode(), \
            f"{result[0]} with {len(result[1])} bytes: {result[1][:200]!r}\n{master.output()}"
    assert master.wait_exit(15) == 0, master.output()
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left", master.output)
