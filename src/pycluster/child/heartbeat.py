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
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..ipc.channel import KIND_INTERNAL, Channel
from ..ipc.messages import ACT, HEARTBEAT
from .loop import MiniLoop
from .process import signal_main_thread

_PROBE = signal.SIGRTMIN + 3


class Heartbeat:
    """Sends ``heartbeat`` to the master while the app's serving thread is alive.

    ``app_loops()`` returns the running asyncio loops the app serves on (the
    loops of its shared listeners), empty for an app without one.
    """

    def __init__(self, timeout: float, loop: MiniLoop, channel: Channel,
                 app_loops: Callable[[], set[Any]]):
        self.timeout = timeout
        self.period = max(timeout / 4.0, 0.05)
        self._loop = loop
        self._channel = channel
        self._app_loops = app_loops
        now = time.monotonic()
        self.main_seen = now
        self.loop_seen = now

    def install_main_probe(self) -> None:
        """Called in the main thread at boot."""
        signal.signal(_PROBE, self._main_alive)

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self._tick)

    def _main_alive(self, signum: int, frame: FrameType | None) -> None:
        self.main_seen = time.monotonic()

    def _loop_alive(self) -> None:
        self.loop_seen = time.monotonic()

    def _tick(self) -> None:
        if self._channel.closed:
            return
        if self.alive(time.monotonic()):
            self._channel.send(KIND_INTERNAL, {ACT: HEARTBEAT})
        self._loop.call_later(self.period, self._tick)

    def alive(self, now: float) -> bool:
        """Probe the serving thread (answered later) and judge it by the last answer."""
        app_loops = self._app_loops()
        if app_loops:
            for app_loop in app_loops:
                try:
                    app_loop.call_soon_threadsafe(self._loop_alive)
                except RuntimeError:
                    pass
            return now - self.loop_seen < self.timeout
        signal_main_thread(_PROBE)  # must interrupt a main thread blocked in a syscall
        return now - self.main_seen < self.timeout
