"""Worker liveness for ``--timeout`` (the worker side).

What a heartbeat proves: every ``interval`` the channel thread asks the
app's *serving* thread for a sign of life and only sends a heartbeat to the
master if it got one recently:

* an app serving on asyncio (any loop that a shared socket was bound or
  listened on): a callback scheduled on that loop must run - a busy loop,
  or a blocking call on the loop (a lock, time.sleep) stops it;
* any other app: a real-time signal's handler must run in the main thread
  (the interpreter is not frozen: SIGSTOP, a C call holding the GIL).

The master aborts (SIGABRT: faulthandler prints every thread's stack) and
then kills a worker whose heartbeats stop for ``--timeout`` seconds.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from ..ipc.channel import KIND_INTERNAL

_PROBE = signal.SIGRTMIN + 3
_seen = {"main": time.monotonic(), "loop": time.monotonic()}


def _main_alive(signum: int, frame: Any) -> None:
    _seen["main"] = time.monotonic()


def _loop_alive() -> None:
    _seen["loop"] = time.monotonic()


def install_main_probe() -> None:
    """Called in the main thread at boot."""
    signal.signal(_PROBE, _main_alive)


def start(worker: Any, timeout: float) -> None:
    period = max(timeout / 4.0, 0.05)
    loop = worker._loop

    def tick() -> None:
        if worker._channel.closed:
            return
        from . import intercept as net
        now = time.monotonic()
        app_loops = {b.loop for b in list(net._registry.values())
                     if b.loop is not None and b.loop.is_running() and not b.loop.is_closed()}
        if app_loops:
            for app_loop in app_loops:
                try:
                    app_loop.call_soon_threadsafe(_loop_alive)
                except RuntimeError:
                    pass
            alive = now - _seen["loop"] < timeout
        else:
            from .runtime import signal_main_thread
            signal_main_thread(_PROBE)  # must interrupt a main thread blocked in a syscall
            alive = now - _seen["main"] < timeout
        if alive:
            worker._channel.send(KIND_INTERNAL, {"act": "heartbeat"})
        loop.call_later(period, tick)

    loop.call_soon_threadsafe(tick)
