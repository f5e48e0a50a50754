"""Taking connections back from a round-robin lane (the other half of
``RoundRobinHandle``; see round_robin.py's docstring).

A connection the worker has not taken is still in its lane's receive queue,
and the primary's own copy of the lane's end ``b`` can take it back with
``recvmsg`` (the kernel gives each queued message to exactly one reader):
when a worker leaves or dies (``_retire``), and when one has left a
hand-off waiting longer than ``handoff_timeout`` (``_check_stalled``, a
watchdog that runs only while hand-offs wait). Nothing here is on the
per-connection path.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import TYPE_CHECKING

from ._lanes import CMSG, FD, Lane, close_fd, leave_rotation, release_spare, restore_spare

if TYPE_CHECKING:
    import asyncio

    from ...core.worker import Address


class TakeBack:
    """The take-back and stall watchdog of a round-robin handle (a mixin)."""

    # What it uses of the handle it is mixed into.
    loop: asyncio.AbstractEventLoop
    address: Address
    closed: bool
    handoff_timeout: float
    _rotation: list[Lane]
    _queue: deque[int]
    _cursor: int
    _watchdog: asyncio.TimerHandle | None
    reclaimed_stalled: int
    reclaimed_gone: int

    def _handoff(self, fd: int) -> bool:
        raise NotImplementedError

    def _drain_queue(self) -> None:
        raise NotImplementedError

    def _stop_reading(self) -> None:
        raise NotImplementedError

    def _warn(self, message: str) -> None:
        raise NotImplementedError

    def _start_watchdog(self) -> None:
        """From idle: take every lane's current state as the baseline."""
        now = time.monotonic()
        for lane in self._rotation:
            lane.taken_seen = lane.handed - lane.waiting()
            lane.since = now
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        self._watchdog = self.loop.call_later(self.handoff_timeout / 2, self._check_stalled)

    def _check_stalled(self) -> None:
        """Take back connections a worker has left in its lane too long."""
        self._watchdog = None
        now = time.monotonic()
        busy = False
        for lane in list(self._rotation):
            waiting = lane.waiting()
            taken = lane.handed - waiting
            if taken != lane.taken_seen or not waiting:
                lane.taken_seen = taken
                lane.since = now
                lane.stalled = False
            elif now - lane.since >= self.handoff_timeout:
                lane.stalled = True  # skipped until it takes what is waiting
                count, back = self._reclaim(lane)
                lane.handed -= count
                self.reclaimed_stalled += count
                lane.taken_seen = lane.handed
                lane.since = now
                if count:
                    self._warn(f"pycluster: worker {lane.worker_id} did not take {count} connection(s) on"
                         f" {self.address} in {self.handoff_timeout:.1f} s; handing them to another worker")
                    self._queue.extendleft(reversed(back))
                else:
                    lane.stalled = False
            if waiting:
                busy = True
        if self._queue:
            self._drain_queue()
        if busy and not self.closed:
            self._arm_watchdog()

    def _reclaim(self, lane: Lane, *, hand_on: bool = True) -> tuple[int, list[int]]:
        """Take back the connections still queued in the lane (race-free: the
        kernel gives each queued message to exactly one reader). Each is handed
        to another worker at once when it can be (``hand_on``); returns how many
        came back and those still to place. Out of descriptors, the master
        gives up its spare one for each and stops when it cannot get it back:
        the rest stay in the lane for the next try, never lost to MSG_CTRUNC."""
        count = 0
        left: list[int] = []
        while restore_spare():  # one descriptor is free for certain: the spare's
            release_spare()
            try:
                data, anc, flags, _ = lane.b.recvmsg(1, CMSG, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            except OSError:  # nothing queued (EAGAIN), or the lane is gone
                restore_spare()
                break
            if flags & socket.MSG_CTRUNC:
                self._warn(f"pycluster: a connection on {self.address} was lost while taking it back"
                     " (out of file descriptors)")
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                    for i in range(0, len(cdata) - 3, 4):
                        fd = FD.unpack_from(cdata, i)[0]
                        count += 1
                        if not (hand_on and not self._queue and self._handoff(fd)):
                            left.append(fd)
            if not data:
                break
        return count, left

    def _retire(self, lane: Lane, requeue: bool = True) -> None:
        if lane.active:
            lane.active = False
            self._cursor = leave_rotation(self._rotation, lane, self._cursor)
        lane.a.close()  # the worker gets EOF; what it never took is still readable on b
        self._finish_retire(lane, requeue)

    def _finish_retire(self, lane: Lane, requeue: bool = True) -> None:
        count, taken = self._reclaim(lane, hand_on=requeue)
        self.reclaimed_gone += count
        if requeue:
            self._queue.extendleft(reversed(taken))
            if not self._rotation:
                self._stop_reading()
            self._drain_queue()
        else:
            for fd in taken:
                close_fd(fd)
        if requeue and not self.closed and lane.waiting():
            # Out of descriptors: take the rest back in a moment.
            self.loop.call_later(0.1, self._finish_retire, lane)
            return
        lane.b.close()

