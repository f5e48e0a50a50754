"""uvicorn, hypercorn and aiohttp run by the app itself drain as a served app does.

uvicorn's own shutdown (SIGTERM) closes every idle keep-alive connection at
once; a request a client sends on one at that moment fails (measured: 18 to
24 failed requests per rolling reload of 4 workers under ``wrk -c32``;
gunicorn's UvicornWorker, the same code, 42). In a worker, once
``uvicorn.server`` is imported, two methods are wrapped:

- ``Config.load``: the loaded app answers with ``Connection: close`` once the
  drain started (``asgi.DrainingApp``);
- ``Server.shutdown``: first the drain - stop accepting, let the clients
  leave on that ``Connection: close``, for up to ``timeout_keep_alive``
  seconds - then uvicorn's own shutdown (which closes what is left, waits for
  the tasks and runs the lifespan shutdown).

Served apps (:mod:`~pycluster.serve.asgi`) drain by themselves and are left alone.
:mod:`~pycluster.serve.selfrun` imports this module only when the app imports
one of these servers (it imports asyncio: a worker's boot stays without it).

hypercorn's ``serve(app, config)`` (``hypercorn.asyncio``) ends the same way
on SIGTERM (measured: 44 to 58 failed requests per reload); with no
``shutdown_trigger`` of the app's own, a worker gives it one that first
drains: an ASGI app answers with ``Connection: close`` and the clients get up
to ``keep_alive_timeout`` seconds to leave, then hypercorn's shutdown runs.
"""

from __future__ import annotations

import asyncio
import signal
from types import ModuleType
from typing import Any

from .common import Drain

_POLL = 0.05
SERVED = "_pycluster_served"  # set on a Config by serve.asgi


def patch_aiohttp(module: ModuleType) -> None:
    """aiohttp's runner cleanup (``web.run_app`` on SIGTERM) closes idle
    keep-alive connections at once: drain first. Every response prepared
    from then on says ``Connection: close``; the clients get up to 5 s (or the
    server's keep-alive timeout, if shorter) to leave; then aiohttp's cleanup."""
    from aiohttp.web_response import StreamResponse

    runner_class = module.BaseRunner
    if getattr(runner_class, "_pycluster_drains", False):
        return
    drain = Drain()
    original_prepare = StreamResponse.prepare
    original_cleanup = runner_class.cleanup

    async def prepare(self: Any, request: Any) -> Any:
        if drain.active:
            self.force_close()
        return await original_prepare(self, request)

    async def cleanup(self: Any) -> None:
        server = getattr(self, "server", None)
        if server is not None and not drain.active:
            drain.start()
            loop = asyncio.get_running_loop()
            keepalive = float(getattr(server, "_kwargs", {}).get("keepalive_timeout", 75.0) or 0)
            deadline = loop.time() + min(5.0, keepalive)
            while server.connections and loop.time() < deadline:
                await asyncio.sleep(_POLL)
        await original_cleanup(self)

    StreamResponse.prepare = prepare  # type: ignore[method-assign]
    runner_class.cleanup = cleanup
    runner_class._pycluster_drains = True


def patch_hypercorn(module: ModuleType) -> None:
    original = getattr(module, "serve", None)
    if original is None or getattr(original, "_pycluster_drains", False):
        return

    async def serve(app: Any, config: Any, *, shutdown_trigger: Any = None, mode: Any = None) -> Any:
        if shutdown_trigger is not None or (mode not in (None, "asgi")):
            return await original(app, config, shutdown_trigger=shutdown_trigger, mode=mode)
        from .asgi import DrainingApp
        from .detect import UsageError, detect
        try:
            asgi = detect(app, "app") == "asgi"
        except UsageError:
            asgi = False
        if not asgi:
            return await original(app, config, shutdown_trigger=shutdown_trigger, mode=mode)
        drain = Drain()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)  # SIGINT stays ignored, as in every worker

        async def trigger() -> None:
            await stop.wait()
            drain.start()
            from ..child import runtime
            current = runtime.current()
            deadline = loop.time() + float(config.keep_alive_timeout)
            while current is not None and current.exits.inflight.busy() and loop.time() < deadline:
                await asyncio.sleep(_POLL)

        return await original(DrainingApp(app, drain, access_log=False), config, shutdown_trigger=trigger,
                              mode="asgi")

    serve._pycluster_drains = True  # type: ignore[attr-defined]
    module.serve = serve  # type: ignore[attr-defined]


def patch_uvicorn(module: ModuleType) -> None:
    from uvicorn.config import Config

    from .asgi import DrainingApp

    server_class = module.Server
    if getattr(server_class, "_pycluster_drains", False):
        return
    original_load = Config.load
    original_shutdown = server_class.shutdown

    def load(self: Any) -> None:
        original_load(self)
        if getattr(self, SERVED, False) or isinstance(self.loaded_app, DrainingApp):
            return
        drain = Drain()
        self._pycluster_drain = drain
        self.loaded_app = DrainingApp(self.loaded_app, drain, access_log=False)

    async def shutdown(self: Any, sockets: Any = None) -> None:
        drain = getattr(self.config, "_pycluster_drain", None)
        if drain is not None and not drain.active:
            drain.start()  # every response from now on says Connection: close
            for server in getattr(self, "servers", ()):
                server.close()  # stop accepting
            loop = asyncio.get_running_loop()
            deadline = loop.time() + float(self.config.timeout_keep_alive)
            while self.server_state.connections and loop.time() < deadline and not self.force_exit:
                await asyncio.sleep(_POLL)
        await original_shutdown(self, sockets)

    Config.load = load  # type: ignore[method-assign]
    server_class.shutdown = shutdown
    server_class._pycluster_drains = True
