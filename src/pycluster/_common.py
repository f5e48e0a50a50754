"""Names and helpers both sides need, without importing either side."""

from __future__ import annotations

import os
import signal as _signal
import socket
import stat
from typing import Any

SCHED_NONE = 1
SCHED_RR = 2
SCHED_REUSEPORT = 3
POLICY_NAMES = {SCHED_NONE: "none", SCHED_RR: "rr", SCHED_REUSEPORT: "reuseport"}
POLICY_BY_NAME = {v: k for k, v in POLICY_NAMES.items()}

ENV_WORKER_ID = "PYCLUSTER_WORKER_ID"
ENV_CHANNEL_FD = "PYCLUSTER_CHANNEL_FD"
ENV_PPID = "PYCLUSTER_PPID"
ENV_STDIO = "PYCLUSTER_STDIO"
ENV_INSPECT_PORT = "PYCLUSTER_INSPECT_PORT"


def signal_number(sig: int | str | None) -> int:
    if sig is None:
        return int(_signal.SIGTERM)
    if isinstance(sig, str):
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(getattr(_signal.Signals, name))
        except AttributeError:
            raise ValueError(f"unknown signal {sig!r}") from None
    return int(sig)


def handle_fds(handle: Any) -> list[int]:
    """The descriptor a message's handle carries (socket, server, fd)."""
    if handle is None:
        return []
    if isinstance(handle, int) and not isinstance(handle, bool):
        return [handle]
    if hasattr(handle, "sockets") and not hasattr(handle, "fileno"):  # asyncio Server
        socks = list(handle.sockets)
        if not socks:
            raise ValueError("that server has no socket to send")
        return [socks[0].fileno()]
    if hasattr(handle, "fileno"):
        return [handle.fileno()]
    raise TypeError(f"cannot send {type(handle).__name__} as a handle: pass a socket, "
                    "a server or a file descriptor")


def wrap_received_fd(fd: int) -> Any:
    """A received descriptor: a socket object for a socket, else the int."""
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            return socket.socket(fileno=fd)
    except OSError:
        pass
    return fd
