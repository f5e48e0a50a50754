"""SCHED_NONE (and every UDP socket): the primary creates the socket and
sends it to each worker, who use it directly (accept / recvfrom)."""

from __future__ import annotations

from typing import Any

from .base import Handle, Member


class SharedHandle(Handle):
    mode = "shared"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.workers: set[int] = set()

    def add(self, worker: Member) -> tuple[dict[str, Any], list[int]]:
        self.workers.add(worker.id)
        return {"mode": self.mode}, [self.sock.fileno()]

    def activate(self, worker: Member) -> None:
        """The worker is listening: nothing to do, it accepts by itself."""

    def remove(self, worker: Member) -> bool:
        self.workers.discard(worker.id)
        return not self.workers
