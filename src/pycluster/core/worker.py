"""The Worker object shared by both sides, its states and address objects.

Role-specific behaviour lives in subclasses (``primary.PrimaryWorker``,
``child.ChildWorker``), not patched onto this class.
"""

from __future__ import annotations

import enum
from typing import Any

from .common import Record
from .events import EventEmitter


class WorkerState(str, enum.Enum):
    """Node's worker states, comparable with their names (``state == "online"``)."""

    NONE = "none"
    ONLINE = "online"
    LISTENING = "listening"
    DISCONNECTED = "disconnected"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


class Address(Record):
    """What a ``listening`` event carries (Node's address object).

    ``address_type`` is 4, 6, -1 (unix socket), "udp4" or "udp6"; ``port`` is
    the real bound port (never 0; None for unix sockets); ``fd`` is set only
    for listeners that came from ``listen(fd=N)``.
    """

    __slots__ = ("address", "port", "address_type", "fd")
    _defaults = {"fd": None}
    address: str | None
    port: int | None
    address_type: int | str
    fd: int | None

    def __str__(self) -> str:
        if self.address_type == -1:
            return f"unix:{self.address}"
        host = self.address or ""
        host = f"[{host}]" if ":" in host else host
        return f"{'udp://' if isinstance(self.address_type, str) else ''}{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port,
                "address_type": self.address_type, "fd": self.fd}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Address:
        return cls(d.get("address"), d.get("port"), d.get("address_type"), d.get("fd"))


class Worker(EventEmitter):
    """A worker as seen by either side. ``Worker()`` alone is an inert record."""


    def __init__(self, id: int = 0, state: str | WorkerState = WorkerState.NONE,
                 process: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.id = id
        self.state = WorkerState(state)
        self.exited_after_disconnect: bool | None = None
        self._process = process

    @property
    def process(self) -> Any:
        """The worker's process as a ``psutil.Process`` (None for a bare Worker)."""
        return self._process

    @property
    def pid(self) -> int | None:
        proc = self._process
        return None if proc is None else proc.pid

    def is_dead(self) -> bool:
        return self.state == WorkerState.DEAD

    def is_connected(self) -> bool:
        return False

    # Node spells these isDead / isConnected / exitedAfterDisconnect; the
    # snake_case names are the API, these are not aliased on purpose.

    def __repr__(self) -> str:
        return f"<Worker id={self.id} pid={self.pid} state={self.state.value}>"
