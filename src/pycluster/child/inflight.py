"""The connections a worker's shared listeners handed to the app.

Python does not exit when it has nothing left to do, so pycluster's default
SIGTERM handler, after a disconnect, must know by itself when the worker's
in-flight requests are done (SPEC 2): it waits until every connection that
``accept()`` returned is closed. A connection is watched through the socket
object the app got, by a weak reference, so the per-accept cost is one set
add and the app's own ``close()`` (or the object's collection) is all it
takes to count as done; nothing wraps the connection's reads or writes.
"""

from __future__ import annotations

import os
import socket
import time
import weakref

DRAIN_POLL = 0.05  # seconds between two looks at the open connections while draining


class InFlight:
    """This worker's accepted connections, and whether a drain is under way."""

    def __init__(self) -> None:
        self._conns: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.add = self._conns.add  # the accept hot path: one bound method, no lookups
        self.draining = False  # pycluster's SIGTERM handler is waiting for them

    def busy(self) -> bool:
        """Is any accepted connection still open?"""
        for _ in range(5):
            try:
                conns = list(self._conns)
                break
            except RuntimeError:  # another thread accepted during the copy
                continue
        else:
            return True
        return any(_still_open(conn) for conn in conns)

    def wait_idle(self) -> None:
        """Block until every accepted connection is closed (signals still run)."""
        while self.busy():
            time.sleep(DRAIN_POLL)


def _still_open(conn: socket.socket) -> bool:
    # close() (once the last makefile() reference is gone) and detach() set
    # fileno() to -1; an os.close() under the object leaves a stale number.
    fd = conn.fileno()
    if fd < 0:
        return False
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
