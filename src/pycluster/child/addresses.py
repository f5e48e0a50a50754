"""Which binds a worker shares, and what it asks the primary for (pure).

Shared: TCP and UDP over IPv4/IPv6, and unix stream sockets bound to a path
(made absolute) or an abstract name (kept as is). Left alone, bound locally:
sockets with SO_REUSEPORT set by the app (it wants its own reuseport
socket), unix autobind (an empty name), unix datagram sockets, raw and
other socket types, and addresses that are no (host, port) tuple.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

from ..ipc.messages import ACT, QUERY

AddressType = int | str  # 4, 6, -1 (unix), "udp4" or "udp6"
GetSockOpt = Callable[[int, int], int]
Resolve = Callable[[str, int, int], str]


class BindQuery:
    """What a bind asks the primary for (the ``query`` message, less its index)."""

    __slots__ = ("address", "port", "address_type", "v6only")

    def __init__(self, address: str, port: int | None, address_type: AddressType, v6only: bool | None = None):
        self.address = address
        self.port = port
        self.address_type = address_type
        self.v6only = v6only

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BindQuery) and self.message(0) == other.message(0)

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"BindQuery({self.address!r}, {self.port!r}, {self.address_type!r}, {self.v6only!r})"

    @property
    def key(self) -> tuple[Any, ...]:
        """Node's handle key without the index: (address, port, type, fd)."""
        return (self.address, self.port, self.address_type, None)

    def message(self, index: int) -> dict[str, Any]:
        msg: dict[str, Any] = {ACT: QUERY, "address": self.address, "port": self.port,
                               "address_type": self.address_type, "fd": None}
        if self.address_type != -1:
            msg["v6only"] = self.v6only
        msg["index"] = index
        return msg


def numeric_host(host: str, family: int, stype: int) -> str:
    """The numeric address for ``host`` ("" is the wildcard); names are resolved."""
    if not host:
        return "0.0.0.0" if family == socket.AF_INET else "::"
    try:
        ipaddress.ip_address(host.split("%")[0])
        return host
    except ValueError:
        infos = socket.getaddrinfo(host, None, family, stype, 0, socket.AI_PASSIVE)
        return str(infos[0][4][0])


def classify(family: int, stype: int, address: Any, getsockopt: GetSockOpt,
             resolve: Resolve = numeric_host) -> BindQuery | None:
    """What a bind of a (family, stype) socket to ``address`` asks the primary
    for, or None to bind locally. ``getsockopt(level, option)`` reads the
    socket's options (SO_REUSEPORT, IPV6_V6ONLY)."""
    if stype not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        return None
    if family in (socket.AF_INET, socket.AF_INET6):
        return _classify_inet(family, stype, address, getsockopt, resolve)
    if family == socket.AF_UNIX and stype == socket.SOCK_STREAM:
        path = address
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not isinstance(path, str) or not path:
            return None  # autobind
        if not path.startswith("\0"):
            path = os.path.abspath(path)
        return BindQuery(path, None, -1)
    return None


def _classify_inet(family: int, stype: int, address: Any, getsockopt: GetSockOpt,
                   resolve: Resolve) -> BindQuery | None:
    try:
        if getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return None  # the app asked for its own reuseport socket
    except OSError:
        pass
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host, port = address[0], address[1]
    if isinstance(host, bytes):
        host = host.decode()
    host = resolve(host or "", family, stype)
    v6 = family == socket.AF_INET6
    atype: AddressType = ("udp6" if v6 else "udp4") if stype == socket.SOCK_DGRAM else (6 if v6 else 4)
    v6only = bool(getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)) if v6 else None
    return BindQuery(host, int(port), atype, v6only)


def sockname(family: int, address: dict[str, Any]) -> Any:
    """``getsockname()`` of a shared socket, from the address the primary bound."""
    if family == socket.AF_UNIX:
        return address.get("address") or ""
    if family == socket.AF_INET6:
        return (address.get("address"), address.get("port"), 0, 0)
    return (address.get("address"), address.get("port"))
