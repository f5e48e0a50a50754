"""SCHED_NONE (and every UDP socket): the primary creates the socket and
sends it to each worker, who use it directly (accept / recvfrom)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ...core.worker import Address

if TYPE_CHECKING:
    from ...core.sockets import UnixName


class SharedHandle:
    mode = "shared"

    def __init__(self, key: str, sock: socket.socket, address: Address, *,
                 owned: bool = False, unlink: UnixName | None = None):
        self.key = key
        self.sock = sock
        self.address = address
        self.owned = owned  # a master listener: outlives its workers
        self._unlink = unlink
        self.workers: set[int] = set()
        self.closed = False

    def add(self, worker) -> tuple[dict, list[int]]:
        self.workers.add(worker.id)
        return {"mode": self.mode}, [self.sock.fileno()]

    def activate(self, worker) -> None:
        """The worker is listening: nothing to do, it accepts by itself."""

    def remove(self, worker) -> bool:
        self.workers.discard(worker.id)
        return not self.workers

    def connections(self, worker) -> int | None:
        return None  # the kernel picks the worker; we cannot count

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        if self._unlink is not None:
            self._unlink.remove()
