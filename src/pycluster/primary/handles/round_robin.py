"""SCHED_RR: the primary accepts and hands each connection to a worker.

Each (listener, worker) pair has a *lane*: an AF_UNIX stream socketpair.
The primary writes one byte plus the connection's fd (SCM_RIGHTS) into end
``a``; end ``b`` is sent to the worker, which installs it under its
listening socket's fd number, so the worker's ``accept()`` is a ``recvmsg``
on ``b`` and its event loop sees ``b`` readable exactly when a connection
waits.

The primary keeps its own copy of ``b``. That is what makes hand-offs
lossless: a connection the worker has not taken yet is still in ``b``'s
receive queue, and the primary can take it back with ``recvmsg`` (the kernel
gives each queued message to exactly one reader), either when the worker
dies or leaves, or when it has sat there longer than ``handoff_timeout``
(a stuck worker). Taken-back connections go to another worker.

The same copy tells the primary, without a word from the worker, how many
hand-offs the worker has not taken yet: the bytes waiting in ``b``
(FIONREAD). Each connection goes to the next worker in rotation that has
taken its last hand-off (the next two are asked); when both are busy
(saturation) it goes to the next one anyway - and so do the next few, without
asking - so a busy cluster never waits on a round trip per connection and
round-robin keeps the shares even.

The per-connection path is O(1) and allocation-light: ``_accept`` returns a
bare fd, at most two ioctls check the lanes, one ``sendmsg`` hands it off,
and the worker sends nothing back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._lanes import (
    FD_PACK,
    INQ,
    INT,
    ONE,
    RESOURCE_ERRNOS,
    SCM_RIGHTS,
    SOL_SOCKET,
    ZERO,
    Lane,
    close_fd,
    restore_spare,
)
from ._takeback import TakeBack
from .base import Handle, Member

if TYPE_CHECKING:
    import asyncio


def warn(message: str) -> None:
    """Where the hand-off path reports trouble (the CLI master points it at its log)."""
    sys.stderr.write(message + "\n")


_ACCEPT_BATCH = 64
_MAX_QUEUE = 512


class RoundRobinHandle(TakeBack, Handle):
    mode = "rr"
    # Set before any worker listens (the engine attaches listeners bound before its loop existed).
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        sock = self.sock
        sock.setblocking(False)
        self.window = max(1, int(self.tuning.window))
        self.handoff_timeout = self.tuning.handoff_timeout
        self.lanes: dict[int, Lane] = {}
        self._rotation: list[Lane] = []
        self._cursor = 0
        self._queue: deque[int] = deque()
        self._reading = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._blind = 0  # hand-offs left to make without asking the lanes
        self._batch = False  # inside an accept batch: hand-offs may go in pairs
        self._stick: Lane | None = None  # where the second connection of a pair goes
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self.accepted = 0
        self.handoffs = 0  # connections sent down a lane (a reclaimed one handed on counts again)
        self.reclaimed_stalled = 0  # taken back from a lane left untouched for handoff_timeout
        self.reclaimed_gone = 0  # taken back from the lane of a worker that left or died
        self._warned_at = -1e9
        restore_spare()

    # -- the handle interface ---------------------------------------------
    def add(self, worker: Member) -> tuple[dict[str, Any], list[int]]:
        old = self.lanes.get(worker.id)
        if old is not None:  # a second bind of the same key by the same worker
            return {"mode": self.mode}, [old.b.fileno()]
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a.setblocking(False)
        lane = Lane(worker.id, a, b)
        self.lanes[worker.id] = lane
        return {"mode": self.mode}, [b.fileno()]

    def activate(self, worker: Member) -> None:
        """The worker called listen(): put its lane in rotation."""
        lane = self.lanes.get(worker.id)
        if lane is None or lane.active:
            return
        lane.active = True
        self._rotation.append(lane)
        self._drain_queue()
        self._start_reading()

    def remove(self, worker: Member) -> bool:
        lane = self.lanes.pop(worker.id, None)
        if lane is not None:
            self._retire(lane)
        return not self.lanes

    def connections(self, worker: Member) -> int | None:
        lane = self.lanes.get(worker.id)
        return lane.handed if lane is not None else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_reading()
        for lane in list(self.lanes.values()):
            self._retire(lane, requeue=False)
        self.lanes.clear()
        while self._queue:
            close_fd(self._queue.popleft())  # no worker left: refuse (Node does too)
        for timer in (self._watchdog, self._retry):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._retry = None
        self.sock.close()
        if self.unix_name is not None:
            self.unix_name.remove()

    # -- accepting ---------------------------------------------------------
    def _start_reading(self) -> None:
        if not self._reading and not self.closed and self._rotation:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        self._batch = self.tuning.pairs
        try:
            self._accept_batch()
        finally:
            self._batch = False
            self._stick = None  # a pair never waits for the next wake-up

    def _accept_batch(self) -> None:
        accept = self.sock._accept  # type: ignore[attr-defined]  # a bare fd, no socket object
        queue = self._queue
        handoff = self._handoff
        more = self._poller.poll
        # Accept while connections wait (bounded). A zero-timeout poll asks
        # "another one?" for a fraction of what a failed accept (EAGAIN,
        # raised as an exception) or another loop wake-up costs.
        count = 0
        while count < _ACCEPT_BATCH:
            if count and not more(0):
                break
            try:
                fd, _addr = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up; the listener is fine
                if exc.errno in RESOURCE_ERRNOS:
                    # Out of fds or memory: stop accepting for a moment so the
                    # loop (and the control socket) keep working, then retry.
                    now = time.monotonic()
                    if now - self._warned_at >= 10.0:  # once per 10 s while it lasts
                        self._warned_at = now
                        warn(f"pycluster: accept() on {self.address} failed: {exc.strerror};"
                             " pausing accepts for 100 ms")
                    self._stop_reading()
                    self.loop.call_later(0.1, self._start_reading)
                    return
                warn(f"pycluster: accept() on {self.address} failed: {exc}")
                break
            count += 1
            if queue or not handoff(fd):
                queue.append(fd)
                self._retry_later()
                if len(queue) >= _MAX_QUEUE:
                    # No worker can take more: leave the rest in the kernel's
                    # backlog (back-pressure) until one can.
                    self._stop_reading()
                    break
        self.accepted += count

    def _handoff(self, fd: int) -> bool:
        stick = self._stick
        if stick is not None:
            # The second connection of a pair goes where the first went: that
            # worker is being woken already (one wake-up, one accept loop for two).
            self._stick = None
            if stick.active and not stick.stalled:
                try:
                    stick.send(ONE, [(SOL_SOCKET, SCM_RIGHTS, FD_PACK(fd))])
                except OSError:
                    pass
                else:
                    stick.handed += 1
                    self.handoffs += 1
                    os.close(fd)
                    return True
        rotation = self._rotation
        n = len(rotation)
        if not n:
            return False
        start = self._cursor
        if self._blind:
            # Saturated a moment ago (every worker had one waiting): plain
            # round-robin for a few hand-offs, without asking the lanes.
            self._blind -= 1
            if not rotation[start].stalled:
                return self._send(fd, rotation, start, 0, n)
            for i in range(1, n):
                if not rotation[(start + i) % n].stalled:
                    return self._send(fd, rotation, start, i, n)
            return False
        ioctl, inq, zero, unpack = fcntl.ioctl, INQ, ZERO, INT.unpack
        fallback = -1
        for i in range(n):
            lane = rotation[(start + i) % n]
            if lane.stalled:
                continue
            try:
                waiting = unpack(ioctl(lane.bfd, inq, zero))[0]
            except OSError:
                continue
            if not waiting:
                return self._send(fd, rotation, start, i, n)  # took its last hand-off
            if fallback < 0 and waiting < self.window:
                fallback = i
            if i and fallback >= 0:
                break  # two busy: do not poll every lane per connection
        if fallback < 0:
            return False
        self._blind = 4 * n
        return self._send(fd, rotation, start, fallback, n)

    def _send(self, fd: int, rotation: list[Lane], start: int, offset: int, n: int) -> bool:
        lane = rotation[(start + offset) % n]
        try:
            lane.send(ONE, [(SOL_SOCKET, SCM_RIGHTS, FD_PACK(fd))])
        except OSError:
            return False  # full (EAGAIN) or going away: the caller queues it
        lane.handed += 1
        self.handoffs += 1
        if self._watchdog is None:
            self._start_watchdog()
        self._cursor = (start + offset + 1) % n
        os.close(fd)
        if self._batch:
            self._stick = lane
        return True

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            if not self._handoff(queue[0]):
                self._retry_later()
                return
            queue.popleft()
        self._start_reading()

    def _retry_later(self) -> None:
        """Every worker was full (or none is listening yet): try again soon."""
        if self._retry is None and not self.closed and self._rotation:
            self._retry = self.loop.call_later(0.005, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self._queue:
            self._drain_queue()

    def _warn(self, message: str) -> None:
        warn(message)  # looked up at each call: the master points the module's warn at its log
