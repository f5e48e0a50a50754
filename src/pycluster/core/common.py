"""Names and helpers both sides need, without importing either side."""

from __future__ import annotations

import os
import re
import signal as _signal
import socket
import stat
from typing import Any

SCHED_NONE = 1
SCHED_RR = 2
SCHED_REUSEPORT = 3
POLICY_NAMES = {SCHED_NONE: "none", SCHED_RR: "rr", SCHED_REUSEPORT: "reuseport"}
POLICY_BY_NAME = {v: k for k, v in POLICY_NAMES.items()}


def plural(count: int, noun: str) -> str:
    """``1 worker``, ``2 workers``, ``0 workers``: a count and its noun in agreement."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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


class Record:
    """A small frozen record: fields from ``__slots__``, positional or keyword,
    with defaults from ``_defaults``; equality, hash and repr by value.
    (``dataclasses`` would cost every worker ~5 ms of import at boot.)"""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} arguments")
        values = dict(self._defaults)
        values.update(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
            values[key] = value
        for name in names:
            if name not in values:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self):
        return (type(self), self._values())


# C0 controls but tab, DEL, and C1 controls: a terminal acts on them (ESC starts
# OSC 0 titles, OSC 52 clipboard writes and CSI sequences; U+009B is a one-character CSI).
_CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but tab shown as ``\\xNN``: a
    worker's output never drives the terminal of whoever reads the logs."""
    return _CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
