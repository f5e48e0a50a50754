"""The round-robin handle's lanes and its spare descriptor (round_robin.py).

A lane is one (listener, worker) AF_UNIX stream socketpair: the primary writes
one byte plus a connection's fd into ``a``; ``b`` goes to the worker, and the
primary keeps a copy of it to count (FIONREAD) and take back what waits.
The constants are module globals so the hand-off path reads them as such.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios

ONE = [b"c"]  # the byte each hand-off carries
FD = struct.Struct("i")
FD_PACK = FD.pack
CMSG = socket.CMSG_SPACE(FD.size)
INQ = termios.FIONREAD
SOL_SOCKET = socket.SOL_SOCKET
SCM_RIGHTS = socket.SCM_RIGHTS
ZERO = bytes(4)
INT = struct.Struct("i")
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Lane:
    __slots__ = ("worker_id", "a", "b", "bfd", "send", "handed", "since", "taken_seen", "active",
                 "stalled")

    def __init__(self, worker_id: int, a: socket.socket, b: socket.socket):
        self.worker_id = worker_id
        self.a = a
        self.send = a.sendmsg
        self.b = b
        self.bfd = b.fileno()
        self.handed = 0       # connections handed to this worker (and not taken back)
        self.since = 0.0      # last time the worker was seen taking a connection
        self.taken_seen = 0   # handed - waiting, at that time
        self.active = False   # in rotation (the worker is listening)
        self.stalled = False  # skipped until it takes what is waiting

    def waiting(self) -> int:
        """Hand-offs sitting in the lane, not yet taken by the worker."""
        try:
            waiting: int = INT.unpack(fcntl.ioctl(self.bfd, INQ, ZERO))[0]
            return waiting
        except OSError:
            return 0


def leave_rotation(rotation: list[Lane], lane: Lane, cursor: int) -> int:
    """Take ``lane`` out of ``rotation``; the cursor that keeps pointing at
    the lane that was next (the rotation's order is unchanged)."""
    try:
        idx = rotation.index(lane)
    except ValueError:
        return cursor
    del rotation[idx]
    if idx < cursor:
        cursor -= 1
    return cursor % len(rotation) if rotation else 0


_spare = [-1]  # a descriptor kept open so the master can always take one connection back


def release_spare() -> None:
    if _spare[0] >= 0:
        os.close(_spare[0])
        _spare[0] = -1


def restore_spare() -> bool:
    if _spare[0] < 0:
        try:
            _spare[0] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
    return True


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
