"""SCHED_REUSEPORT: every worker binds its own SO_REUSEPORT socket.

The primary keeps a bound, non-listening SO_REUSEPORT socket on the address:
it resolves port 0 once (every worker then binds the same port), proves the
address is bindable (errors reach the worker as a plain bind's would), and
holds the port so no unrelated process can take it between workers. A bound
socket that never listens receives no connections.
"""

from __future__ import annotations

from typing import Any

from .base import Member
from .shared import SharedHandle


class ReusePortHandle(SharedHandle):
    mode = "reuseport"
    reuseport = True

    def add(self, worker: Member) -> tuple[dict[str, Any], list[int]]:
        self.workers.add(worker.id)
        return {"mode": self.mode, "address": self.address.address, "port": self.address.port}, []
