"""pycluster: Node.js's ``cluster`` module for Python.

    import pycluster as cluster

    if cluster.is_primary:
        for _ in range(4):
            cluster.fork()
        cluster.on("exit", lambda worker, code, signal: cluster.fork())
        cluster.run()
    else:
        http.server.HTTPServer(("", 8000), Handler).serve_forever()

Workers re-run the program; a server a worker binds shares the primary's
listener for that address (round-robin hand-off by default).
"""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import Any as _Any

from .core.common import POLICY_BY_NAME as _POLICY_BY_NAME
from .core.common import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
from .core.events import EventEmitter
from .core.worker import Address, Worker, WorkerState
from .errors import AckTimeoutError, ChannelClosedError, ClusterError, NotPrimaryError, ProtocolError, SettingsError
from .ipc.messages import ENV_FORKSERVER_FD as _ENV_FORKSERVER_FD
from .ipc.messages import ENV_SCHED_POLICY as _ENV_SCHED_POLICY
from .ipc.messages import ENV_WORKER_ID as _ENV_WORKER_ID

__version__ = "0.1.0"

__all__ = [
    "is_primary", "is_master", "is_worker", "fork", "setup_primary", "setup_master",
    "settings", "scheduling_policy", "SCHED_RR", "SCHED_NONE", "SCHED_REUSEPORT",
    "workers", "worker", "disconnect", "on", "once", "off", "run", "serve", "listen", "listeners",
    "exclusive", "Worker", "WorkerState", "Address", "EventEmitter", "ClusterError",
    "ProtocolError", "ChannelClosedError", "AckTimeoutError", "SettingsError",
    "NotPrimaryError", "__version__",
]

# A --preload fork server imports the app as a worker would, and boots
# pycluster's worker side in each worker it forks (_boot_forked).
_preloading = _ENV_FORKSERVER_FD in _os.environ
is_worker: bool = _ENV_WORKER_ID in _os.environ or _preloading
is_primary: bool = not is_worker
is_master: bool = is_primary

_env_policy = _os.environ.get(_ENV_SCHED_POLICY, "").strip().lower()
scheduling_policy: _Any = _POLICY_BY_NAME.get(_env_policy, SCHED_RR) if _env_policy in ("", *_POLICY_BY_NAME) \
    else f"PYCLUSTER_SCHED_POLICY={_env_policy!r} (use rr, none or reuseport)"

settings: dict[str, _Any] = {}
worker: _Any = None
workers: dict[int, _Any] = {}

_engine: _Any = None


def _set_settings(merged: dict[str, _Any]) -> None:
    global settings
    settings = merged


if is_primary:
    import sys as _sys

    from .primary.engine import Engine as _Engine

    _engine = _Engine(_sys.modules[__name__])
    workers = _engine.workers
    _emitter = EventEmitter(loop_getter=lambda: _engine.loop, on_error=_engine.handler_failed)
else:
    from .child import runtime as _child

    _emitter = EventEmitter()
    if not _preloading:
        worker = _child.boot().worker


def _boot_forked() -> None:
    """In a worker forked by the fork server: become worker N now."""
    global worker, _preloading
    _preloading = False
    worker = _child.boot().worker


def _interceptor() -> _Any:
    """The worker's bind interception (ENOTCONN before the worker booted)."""
    runtime = _child.current()
    if runtime is None:
        raise OSError(_errno.ENOTCONN, "not connected to a primary")
    return runtime.interceptor

on = _emitter.on
once = _emitter.once
off = _emitter.off


def _primary_only(name: str) -> _Any:
    if _engine is None:
        raise NotPrimaryError(f"cluster.{name}() can only be called in the primary")
    return _engine


def setup_primary(**options: _Any) -> dict[str, _Any]:
    """Change how later workers are started (Node's setupPrimary); emits 'setup'."""
    return _primary_only("setup_primary").setup_primary(options)


setup_master = setup_primary


def fork(env: dict[str, _Any] | None = None) -> Worker:
    """Start a worker: a fresh interpreter re-running this program."""
    return _primary_only("fork").fork(env)


def disconnect(callback: _Any = None) -> None:
    """Disconnect every worker; ``callback`` runs once all have left."""
    if _engine is None:
        if worker is not None:
            worker.disconnect()
        return
    _engine.disconnect(callback)


def run() -> int:
    """Run the primary until no worker is left (or SIGINT/SIGTERM); returns 0."""
    return _primary_only("run").run()


async def serve() -> int:
    """``run()`` for code already inside an asyncio loop."""
    return await _primary_only("serve").serve()


def listen(address: _Any = None, *, kind: str = "tcp", backlog: int = 2048,
           fd: int | None = None, exclusive: bool = False) -> _Any:
    """A shared listening socket for ``address`` (``HOST:PORT``, ``unix:/p``,
    ``udp://H:P``, ``fd://N`` or a (host, port) tuple).

    In a worker: the same socket an intercepted bind gives; no address means
    the primary's first listener (``pycluster run --bind``). In the primary:
    registers a listener that outlives its workers and returns it (do not
    accept on it yourself under SCHED_RR).
    """
    if _engine is not None:
        spec = address if address is not None else (f"fd://{fd}" if fd is not None else None)
        if spec is None:
            raise ValueError("listen() in the primary needs an address")
        return _engine.add_listener(spec, kind=kind).sock
    return _interceptor().listen_address(address, kind=kind, backlog=backlog, fd=fd, exclusive_bind=exclusive)


def listeners() -> list[_Any]:
    """In a worker: a socket for each of the primary's listeners (``--bind``), in order."""
    if _engine is not None:
        return [handle.sock for handle in _engine.master_listeners]
    return _interceptor().primary_listeners()


def exclusive() -> _Any:
    """Context manager: binds inside it stay local to this worker (not shared)."""
    from .child.intercept import exclusive as _exclusive
    return _exclusive()
