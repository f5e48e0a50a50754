"""An ASGI app served with uvicorn on the master's listeners (SPEC 8).

uvicorn picks uvloop and httptools when they are installed (``uvicorn[standard]``,
the ``pycluster[asgi]`` extra), as its own CLI does; under rr each listener is
a hand-off lane, which the worker's wrapped uvloop serves from Python
(``child/uvloop_lanes.py``). Lifespan events run when the app handles them.

The drain (SIGTERM) replaces uvicorn's shutdown, which closes idle keep-alive
connections at once (a request sent on one at that moment fails): the servers
stop accepting, every response started from then on carries ``Connection:
close`` (so the client reconnects, to another worker), and the worker waits for
the connections to close; one still open and idle after ``keep_alive`` seconds
gets uvicorn's own shutdown. Then uvicorn's shutdown runs as usual (lifespan
shutdown included) and the worker exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from .adapters import SERVED
from .common import Drain, access_line, master_listeners
from .options import ServeOptions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSE = (b"connection", b"close")
_POLL = 0.05  # seconds between two looks at the open connections while draining


class DrainingApp:
    """The app, with ``Connection: close`` on responses started once draining
    (and, with ``access_log``, one line per request)."""

    def __init__(self, app: Any, drain: Drain, access_log: bool):
        self.app = app
        self.drain = drain
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if not self.access_log:
            async def send_closing(message: Message) -> None:
                if drain.active and message["type"] == "http.response.start":
                    message = _closing(message)
                await send(message)
            await self.app(scope, receive, send_closing)
            return
        started = time.perf_counter()
        status: list[Any] = ["-"]

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message.get("status", "-")
                if drain.active:
                    message = _closing(message)
            await send(message)
        try:
            await self.app(scope, receive, send_logged)
        finally:
            access_line(scope.get("client"), scope.get("method", "-"), scope.get("path", ""),  # root_path included
                        scope.get("query_string", b"").decode("latin-1"), f"HTTP/{scope.get('http_version', '1.1')}",
                        status[0], time.perf_counter() - started)


def _closing(message: Message) -> Message:
    headers = list(message.get("headers") or ())
    if not any(name.lower() == b"connection" for name, _ in headers):
        headers.append(_CLOSE)
    return {**message, "headers": headers}


def serve(app: Any, options: ServeOptions) -> int:
    import uvicorn

    drain = Drain()
    sockets = master_listeners("an ASGI")
    config = uvicorn.Config(
        DrainingApp(app, drain, options.access_log), interface="asgi3", lifespan="auto",
        timeout_keep_alive=max(1, round(options.keep_alive)), access_log=False,
        proxy_headers=options.proxy_headers, forwarded_allow_ips=options.forwarded_allow_ips,
        root_path=options.root_path, log_level="info")
    setattr(config, SERVED, True)  # it drains by itself (below): no second wrap
    server = _server(config, drain, options.keep_alive)
    server.run(sockets=sockets)
    return 0


def _server(config: Any, drain: Drain, keep_alive: float) -> Any:
    """uvicorn's Server, with pycluster's drain on SIGTERM instead of its shutdown
    (the class is made here: uvicorn is imported only when an app is served)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            drain.install()
            yield

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            loop = asyncio.get_running_loop()

            def wake() -> None:  # SIGTERM's handler may run outside the loop's callbacks
                loop.call_soon_threadsafe(self._start_drain)
            drain.on_start(wake)
            if drain.active:
                self._start_drain()

        def _start_drain(self) -> None:
            if getattr(self, "_drain_task", None) is None:
                self._drain_task = asyncio.ensure_future(self._drain())

        async def _drain(self) -> None:
            for listener in self.servers:
                listener.close()  # stop accepting (under rr: the lane closes)
            loop = asyncio.get_running_loop()
            idle_after = loop.time() + keep_alive
            shut = False
            while self.server_state.connections:
                if not shut and loop.time() >= idle_after:
                    shut = True  # what is still open was idle for keep_alive: uvicorn's own shutdown
                    for connection in list(self.server_state.connections):
                        connection.shutdown()
                await asyncio.sleep(_POLL)
            self.should_exit = True

    return Server(config)
