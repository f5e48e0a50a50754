"""SCHED_RR: the app's fd becomes this worker's hand-off lane.

The primary accepts and passes each connection down the lane (see
``primary/handles/round_robin.py``); ``accept()`` is a ``recvmsg`` that
takes the next one. Nothing goes back: the primary sees what we have not
taken in its copy of the lane, and takes it back after ``handoff_timeout``.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from .base import DescriptorBinding, c_server

_FD = struct.Struct("i")
_CMSG = socket.CMSG_SPACE(_FD.size)


class RoundRobinBinding(DescriptorBinding):
    mode = "rr"
    retire_on_disconnect = False  # the primary closes the lane; we retire on EOF

    def getsockname(self, sock: socket.socket) -> Any:
        return self.sockname  # the lane is no TCP socket

    def setsockopt(self, sock: socket.socket, args: tuple[Any, ...]) -> None:
        return None  # options of the primary's listener apply (TCP_NODELAY is set)

    def hand_over(self, sock: socket.socket) -> None:
        """C code cannot take a lane: libuv listens and accepts on it, and a
        lane carries hand-offs that only our ``recvmsg`` can take. Nor can the
        primary give this worker its listener (it never accepts on a descriptor
        a worker also holds). Say so at once, in the error the server's start fails with."""
        raise OSError(errno.EOPNOTSUPP, (
            f"pycluster: worker {self.ctx.worker_id}: a server in C ({c_server()}) took the socket for"
            f" {self.where()} and cannot accept round-robin hand-offs; run with --policy none or"
            " reuseport, or uvicorn's --loop asyncio"))

    def _accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Take the next connection the primary handed us."""
        fd = sock.fileno()
        while True:
            self.ctx.spare.use()
            try:
                data, anc, flags, _addr = sock.recvmsg(1, _CMSG, socket.MSG_CMSG_CLOEXEC)
            except ConnectionResetError:
                # The primary closed the lane with our last ack unread: same as EOF.
                data, anc, flags = b"", [], 0
            finally:
                self.ctx.spare.restore()
            if not data:
                # The primary closed this lane (we were disconnected): stop being
                # readable for good. Nothing will ever arrive again, so accept
                # behaves as on an idle listener: a blocking one waits (until the
                # SIGTERM that follows a disconnect), others report EAGAIN.
                self.entomb(fd)
                return self.accept_nothing(sock)
            conn_fd = -1
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS and len(cdata) >= 4:
                    conn_fd = _FD.unpack_from(cdata)[0]
            if conn_fd < 0:
                if flags & socket.MSG_CTRUNC:
                    self.ctx.spare.lost_one()
                continue
            conn = socket.socket(sock.family, sock.type, sock.proto, conn_fd)
            try:
                addr = conn.getpeername()
            except OSError:
                addr = None
            return conn, addr
