"""The interface every listener strategy implements (Node's handles).

A handle owns one primary-side listener and answers two questions:
``add(worker) -> (reply, fds)`` (what a worker that binds this address gets)
and ``remove(worker) -> bool`` (True when the last worker has left).
``activate`` puts a worker that called listen() to work, ``connections``
counts what the primary handed it (None when the kernel picks the worker).
Every strategy takes the same constructor arguments, so the policy table
(``primary.listeners.POLICIES``) can build any of them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..settings import DEFAULT_TUNING, Tuning

if TYPE_CHECKING:
    import asyncio

    from ...core.sockets import UnixName
    from ...core.worker import Address


class Member(Protocol):
    """What a handle needs of a worker: its id."""

    @property
    def id(self) -> int: ...


class Handle:
    """One primary-side listener shared by the workers that bind its address."""

    mode: ClassVar[str]  # the reply's "mode": which binding the worker side uses
    # The primary binds the address with SO_REUSEPORT and never listens on it:
    # each worker binds its own socket (SCHED_REUSEPORT).
    reuseport: ClassVar[bool] = False

    def __init__(self, key: str, sock: socket.socket, address: Address, *,
                 loop: asyncio.AbstractEventLoop | None = None, owned: bool = False,
                 unix_name: UnixName | None = None, tuning: Tuning = DEFAULT_TUNING):
        self.key = key
        self.sock = sock
        self.address = address
        self.loop = loop
        self.owned = owned  # a master listener (--bind): outlives its workers
        self.unix_name = unix_name  # the socket file to remove on close
        self.tuning = tuning
        self.closed = False

    def add(self, worker: Member) -> tuple[dict[str, Any], list[int]]:
        raise NotImplementedError

    def activate(self, worker: Member) -> None:
        """The worker called listen() (ignored for a worker never added)."""

    def remove(self, worker: Member) -> bool:
        raise NotImplementedError

    def connections(self, worker: Member) -> int | None:
        return None  # the kernel picks the worker; we cannot count

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        if self.unix_name is not None:
            self.unix_name.remove()
