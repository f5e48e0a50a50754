"""uvicorn run by the app itself (``uvicorn.run(app, ...)``) drains as a served app does.

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
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

from ..child.import_hooks import after_import
from .common import Drain

_POLL = 0.05
_SERVED = "_pycluster_served"  # set on a Config by serve.asgi


def install() -> None:
    """Patch uvicorn when (if) the app imports it."""
    after_import("uvicorn.server", _patch)


def _patch(module: ModuleType) -> None:
    from uvicorn.config import Config

    from .asgi import DrainingApp

    server_class = module.Server
    if getattr(server_class, "_pycluster_drains", False):
        return
    original_load = Config.load
    original_shutdown = server_class.shutdown

    def load(self: Any) -> None:
        original_load(self)
        if getattr(self, _SERVED, False) or isinstance(self.loaded_app, DrainingApp):
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
