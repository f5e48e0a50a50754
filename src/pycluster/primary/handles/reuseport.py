"""SCHED_REUSEPORT: every worker binds its own SO_REUSEPORT socket.

The primary keeps a bound, non-listening SO_REUSEPORT socket on the address:
it resolves port 0 once (every worker then binds the same port), proves the
address is bindable (errors reach the worker as a plain bind's would), and
holds the port so no unrelated process can take it between workers. A bound
socket that never listens receives no connections.
"""

from __future__ import annotations

import socket

from ...core.worker import Address


class ReusePortHandle:
    mode = "reuseport"

    def __init__(self, key: str, sock: socket.socket, address: Address, *, owned: bool = False):
        self.key = key
        self.sock = sock
        self.address = address
        self.owned = owned
        self.workers: set[int] = set()
        self.closed = False

    def add(self, worker) -> tuple[dict, list[int]]:
        self.workers.add(worker.id)
        return {"mode": self.mode, "address": self.address.address, "port": self.address.port}, []

    def activate(self, worker) -> None:
        pass

    def remove(self, worker) -> bool:
        self.workers.discard(worker.id)
        return not self.workers

    def connections(self, worker) -> int | None:
        return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
