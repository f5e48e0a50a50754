"""SCHED_RR: the primary accepts and hands each connection to a worker.

Each (listener, worker) pair has a *lane*: an AF_UNIX stream socketpair.
The primary writes one byte plus the connection's fd (SCM_RIGHTS) into end
``a``; end ``b`` is sent to the worker, which installs it under its
listening socket's fd number, so the worker's ``accept()`` is a ``recvmsg``
on ``b`` and its event loop sees ``b`` readable exactly when a connection
waits. The worker answers each accept with one byte on ``b`` (the ack).

The primary keeps its own copy of ``b``. That is what makes hand-offs
lossless: a connection the worker has not taken yet is still in ``b``'s
receive queue, and the primary can take it back with ``recvmsg`` (the kernel
gives each queued message to exactly one reader), either when the worker
dies or leaves, or when it has sat there longer than ``handoff_timeout``
(a stuck worker). Taken-back connections go to another worker.

The per-connection path is O(1) and allocation-light: ``_accept`` returns a
bare fd, one ``sendmsg`` hands it off, acks are read in batches.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from collections import deque

from ..worker import Address

log = logging.getLogger("pycluster")

_ONE = [b"c"]
_FD = struct.Struct("i")
_CMSG = socket.CMSG_SPACE(_FD.size)
_ACCEPT_BATCH = 64
_MAX_QUEUE = 512
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Lane:
    __slots__ = ("worker_id", "a", "b", "afd", "pending", "handed", "since", "active", "stalled")

    def __init__(self, worker_id: int, a: socket.socket, b: socket.socket):
        self.worker_id = worker_id
        self.a = a
        self.b = b
        self.afd = a.fileno()
        self.pending = 0      # handed off, not yet acknowledged
        self.handed = 0       # connections this worker took
        self.since = 0.0      # when pending last went from 0 to 1, or last progress
        self.active = False   # in rotation (the worker is listening)
        self.stalled = False  # skipped until it acknowledges again


class RoundRobinHandle:
    mode = "rr"

    def __init__(self, key: str, sock: socket.socket, address: Address, loop, *,
                 owned: bool = False, window: int = 1, handoff_timeout: float = 5.0,
                 unlink: tuple[str, str] | None = None):
        sock.setblocking(False)
        self._unlink = unlink
        self.key = key
        self.sock = sock
        self.address = address
        self.loop = loop
        self.owned = owned
        self.window = max(1, int(window))
        self.handoff_timeout = handoff_timeout
        self.lanes: dict[int, _Lane] = {}
        self._rotation: list[_Lane] = []
        self._cursor = 0
        self._queue: deque[int] = deque()
        self._reading = False
        self._watchdog = None
        self._batch = 1
        self.closed = False
        self.accepted = 0

    # -- the handle interface ---------------------------------------------
    def add(self, worker) -> tuple[dict, list[int]]:
        old = self.lanes.get(worker.id)
        if old is not None:  # a second bind of the same key by the same worker
            return {"mode": self.mode}, [old.b.fileno()]
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a.setblocking(False)
        lane = _Lane(worker.id, a, b)
        self.lanes[worker.id] = lane
        self.loop.add_reader(lane.afd, self._on_ack, lane)
        return {"mode": self.mode}, [b.fileno()]

    def activate(self, worker) -> None:
        """The worker called listen(): put its lane in rotation."""
        lane = self.lanes.get(worker.id)
        if lane is None or lane.active:
            return
        lane.active = True
        self._rotation.append(lane)
        self._drain_queue()
        self._start_reading()

    def remove(self, worker) -> bool:
        lane = self.lanes.pop(worker.id, None)
        if lane is not None:
            self._retire(lane)
        return not self.lanes

    def connections(self, worker) -> int | None:
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
            _close(self._queue.popleft())  # no worker left: refuse (Node does too)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.sock.close()
        for path in (self._unlink or ()):
            try:
                os.unlink(path)
            except OSError:
                pass

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
        accept = self.sock._accept
        queue = self._queue
        # One connection per wake-up while they trickle in (no EAGAIN probe:
        # level-triggered epoll wakes us again), a batch when they pour in.
        batch = self._batch
        count = 0
        while count < batch:
            try:
                fd, _addr = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up; the listener is fine
                if exc.errno in _RESOURCE_ERRNOS:
                    # Out of fds or memory: stop accepting for a moment so the
                    # loop (and the control socket) keep working, then retry.
                    log.error("pycluster: accept() on %s failed: %s; pausing accepts for 100 ms",
                              _fmt(self.address), exc.strerror)
                    self._stop_reading()
                    self.loop.call_later(0.1, self._start_reading)
                    return
                log.error("pycluster: accept() on %s failed: %s", _fmt(self.address), exc)
                break
            count += 1
            if queue or not self._handoff(fd):
                queue.append(fd)
                if len(queue) >= _MAX_QUEUE:
                    # Every worker is busy: leave the rest in the kernel's
                    # backlog (back-pressure) until acks free a lane.
                    self._stop_reading()
                    break
        self.accepted += count
        self._batch = _ACCEPT_BATCH if count >= batch else 1

    def _handoff(self, fd: int) -> bool:
        """Give fd to the next worker in rotation that has taken its last
        hand-off; when every worker has one waiting (saturation), to the next
        with fewer than ``window`` waiting, so a busy cluster never waits on
        an ack round trip per connection."""
        rotation = self._rotation
        n = len(rotation)
        if not n:
            return False
        start = self._cursor
        for limit in (1, self.window):
            for i in range(n):
                lane = rotation[(start + i) % n]
                if lane.pending >= limit or lane.stalled:
                    continue
                try:
                    lane.a.sendmsg(_ONE, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FD.pack(fd))])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue  # the lane is going away; its worker's exit retires it
                if not lane.pending:
                    lane.since = time.monotonic()
                    if self._watchdog is None:
                        self._arm_watchdog()
                lane.pending += 1
                lane.handed += 1
                self._cursor = (start + i + 1) % n
                os.close(fd)
                return True
            if self.window <= 1:
                break
        return False

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            if not self._handoff(queue[0]):
                return
            queue.popleft()
        self._start_reading()

    def _on_ack(self, lane: _Lane) -> None:
        try:
            data = lane.a.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(lane.afd)
            return
        lane.pending = max(0, lane.pending - len(data))
        lane.since = time.monotonic()
        lane.stalled = False
        if self._queue:
            self._drain_queue()

    # -- taking connections back -------------------------------------------
    def _arm_watchdog(self) -> None:
        self._watchdog = self.loop.call_later(self.handoff_timeout / 2, self._check_stalled)

    def _check_stalled(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        busy = False
        for lane in list(self._rotation):
            if lane.pending <= 0:
                continue
            if now - lane.since >= self.handoff_timeout:
                taken = self._reclaim(lane)
                lane.pending = max(0, lane.pending - len(taken))
                if taken:
                    lane.stalled = True
                    log.warning("pycluster: worker %d did not take %d connection(s) on %s in %.1f s;"
                                " handing them to another worker", lane.worker_id, len(taken),
                                _fmt(self.address), self.handoff_timeout)
                    self._queue.extendleft(reversed(taken))
                lane.since = now
            if lane.pending > 0:
                busy = True
        if self._queue:
            self._drain_queue()
        if busy and not self.closed:
            self._arm_watchdog()

    def _reclaim(self, lane: _Lane) -> list[int]:
        """Take back every connection still queued in the lane (race-free:
        the kernel gives each queued message to exactly one reader)."""
        fds: list[int] = []
        while True:
            try:
                data, anc, _flags, _ = lane.b.recvmsg(1, _CMSG,
                                                       socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                    fds.extend(_FD.unpack_from(cdata, i)[0] for i in range(0, len(cdata) - 3, 4))
            if not data:
                break
        return fds

    def _retire(self, lane: _Lane, requeue: bool = True) -> None:
        if lane.active:
            lane.active = False
            try:
                idx = self._rotation.index(lane)
            except ValueError:
                idx = -1
            if idx >= 0:
                del self._rotation[idx]
                if idx < self._cursor:
                    self._cursor -= 1
                if self._rotation:
                    self._cursor %= len(self._rotation)
                else:
                    self._cursor = 0
        self.loop.remove_reader(lane.afd)
        taken = self._reclaim(lane)
        lane.a.close()
        lane.b.close()
        if requeue:
            self._queue.extendleft(reversed(taken))
            if not self._rotation:
                self._stop_reading()
            self._drain_queue()
        else:
            for fd in taken:
                _close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _fmt(addr: Address) -> str:
    if addr.port is None:
        return f"unix:{addr.address}"
    host = addr.address or ""
    return f"[{host}]:{addr.port}" if ":" in host else f"{host}:{addr.port}"
