"""SCHED_REUSEPORT: the app's own socket binds the address with SO_REUSEPORT
(the primary resolved port 0 and checked the address); the kernel spreads
connections over the workers' sockets."""

from __future__ import annotations

import os
import socket
from typing import Any

from ...core.sockets import DEFAULT_BACKLOG
from .base import Binding


class ReusePortBinding(Binding):
    mode = "reuseport"

    def adopt(self, sock: socket.socket, fds: list[int], original: Any) -> None:
        ops = self.ctx.ops
        for fd in fds:
            os.close(fd)
        ops.setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.stream:
            ops.setsockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = self.address.get("address") or self.base[0]
        port = self.address.get("port")
        target = (host, port) if sock.family == socket.AF_INET else (host, port) + tuple(original[2:4])
        try:
            ops.bind(sock, target)
        except BaseException:
            # The primary counted us in: tell it we are not coming.
            self.ctx.primary.notify_closed(self.key)
            raise

    def open(self, family: int, stype: int, fds: list[int]) -> socket.socket:
        sock = socket.socket(family, stype)
        try:
            self.adopt(sock, fds, (self.address.get("address"), self.address.get("port"), 0, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    def _listen(self, sock: socket.socket, args: tuple[Any, ...]) -> None:
        self.ctx.ops.listen(sock, *args)  # our own socket: it listens itself

    def hand_over(self, sock: socket.socket) -> None:
        """C code will listen on our socket itself (libuv's uv_listen), after the
        'listening' notice would reach the primary: listen now so the socket is
        in the reuseport group when we say so (the C side's listen() then only
        sets its backlog)."""
        if self.stream and not self.dead:
            self.ctx.ops.listen(sock, DEFAULT_BACKLOG)
        super().hand_over(sock)
