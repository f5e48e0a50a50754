"""A minimal event loop for the worker's channel thread.

The channel needs readers, writers, timers and thread-safe calls, nothing
else; importing asyncio (and ssl with it) would add ~25 ms to every worker's
boot for apps that never use it. This loop offers the subset of asyncio's
loop API that ``channel.Channel`` and the worker use.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

_Callback = Callable[..., Any]


class TimerHandle:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: _Callback, args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class MiniLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._ready: deque[tuple[_Callback, tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread_id: int | None = None
        self._closed = False
        self._stopping = False

    # -- asyncio-compatible subset ------------------------------------------
    def time(self) -> float:
        return time.monotonic()

    def is_closed(self) -> bool:
        return self._closed

    def is_running(self) -> bool:
        return self._thread_id is not None

    def call_soon(self, callback: _Callback, *args: Any) -> None:
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: _Callback, *args: Any) -> None:
        if self._closed:
            raise RuntimeError("loop is closed")
        self._ready.append((callback, args))  # deque.append is atomic
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    def call_later(self, delay: float, callback: _Callback, *args: Any) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (handle.when, next(self._counter), handle))
        if threading.get_ident() != self._thread_id:
            self.call_soon_threadsafe(lambda: None)
        return handle

    def _modify(self, fd: int, event: int, callback: _Callback | None, args: tuple[Any, ...]) -> None:
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            if callback is not None:
                entry = {event: (callback, args)}
                self._selector.register(fd, event, entry)
            return
        entry = dict(key.data)
        if callback is None:
            entry.pop(event, None)
        else:
            entry[event] = (callback, args)
        mask = 0
        for ev in entry:
            mask |= ev
        if mask:
            self._selector.modify(fd, mask, entry)
        else:
            self._selector.unregister(fd)

    def add_reader(self, fd: int, callback: _Callback, *args: Any) -> None:
        self._modify(fd, selectors.EVENT_READ, callback, args)

    def remove_reader(self, fd: int) -> bool:
        self._modify(fd, selectors.EVENT_READ, None, ())
        return True

    def add_writer(self, fd: int, callback: _Callback, *args: Any) -> None:
        self._modify(fd, selectors.EVENT_WRITE, callback, args)

    def remove_writer(self, fd: int) -> bool:
        self._modify(fd, selectors.EVENT_WRITE, None, ())
        return True

    def create_task(self, coro: Any) -> None:
        """Coroutine handlers in a worker run to completion on this thread."""
        import asyncio
        asyncio.run(coro)

    # -- running ------------------------------------------------------------
    def run_forever(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            while not self._stopping:
                self._run_once()
        finally:
            self._thread_id = None

    def stop(self) -> None:
        self._stopping = True

    def _run_once(self) -> None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if self._ready:
            timeout: float | None = 0.0
        elif timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        else:
            timeout = None
        for key, events in self._selector.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                continue
            for event, (callback, args) in list(key.data.items()):
                if events & event:
                    self._ready.append((callback, args))
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, handle = heapq.heappop(timers)
            if not handle.cancelled:
                self._ready.append((handle.callback, handle.args))
        for _ in range(len(self._ready)):
            callback, args = self._ready.popleft()
            try:
                callback(*args)
            except Exception:  # noqa: BLE001 - like asyncio: report, keep running
                traceback.print_exc()

    def close(self) -> None:
        self._closed = True
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
