"""Listening sockets: address syntax, creation and description (both sides).

The address syntax is the CLI's ``--bind``: ``HOST:PORT``, ``[V6]:PORT``,
``:PORT``, ``unix:/path``, ``udp://HOST:PORT``, ``fd://N``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from typing import Any

from .common import Record
from .worker import Address

DEFAULT_BACKLOG = 2048


class ListenSpec(Record):
    """A parsed address: kind is "tcp", "udp", "unix" or "fd"."""

    __slots__ = ("kind", "host", "port", "path", "fd")
    _defaults = {"host": None, "port": None, "path": None, "fd": None}
    kind: str
    host: str | None
    port: int | None
    path: str | None
    fd: int | None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        prefix = "udp://" if self.kind == "udp" else ""
        return f"{prefix}{host}:{self.port}"


def parse_address(spec: object, kind: str | None = None) -> ListenSpec:
    """Parse the ``--bind`` syntax (or a (host, port) tuple, or a port number).

    Raises ValueError with a message that names the bad address.
    """
    if isinstance(spec, ListenSpec):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"bad address {spec!r}")
    if isinstance(spec, int):
        return ListenSpec(kind or "tcp", "", _port(spec, spec))
    if isinstance(spec, tuple) and len(spec) >= 2:
        host, port = spec[0], spec[1]
        return ListenSpec(kind or "tcp", host or "", _port(port, spec))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"bad address {spec!r}: expected HOST:PORT, [V6]:PORT, :PORT, "
                         "unix:/path, udp://HOST:PORT or fd://N")
    text = spec.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"bad address {spec!r}: unix: needs a path")
        return ListenSpec("unix", path=path)
    if text.startswith("fd://"):
        digits = text[5:]
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"bad address {spec!r}: fd:// needs a descriptor number")
        fd = int(digits)
        return ListenSpec("fd", fd=fd)
    k = kind or "tcp"
    for prefix, pk in (("udp://", "udp"), ("tcp://", "tcp")):
        if text.startswith(prefix):
            text, k = text[len(prefix):], pk
            break
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise ValueError(f"bad address {spec!r}: expected [V6]:PORT")
        host, port_s = text[1:close], text[close + 2:]
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError(f"bad address {spec!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            if text.isascii() and text.isdigit():
                host, port_s = "", text
            else:
                raise ValueError(f"bad address {spec!r}: missing :PORT")
        if ":" in host:
            raise ValueError(f"bad address {spec!r}: write IPv6 hosts as [V6]:PORT")
    return ListenSpec(k, host, _port(port_s, spec))


def _port(value: object, spec: object) -> int:
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"bad address {spec!r}: port {value!r} is not a number")
        port = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        port = value
    else:
        raise ValueError(f"bad address {spec!r}: port {value!r} is not a number")
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {spec!r}: port {port} is out of range 0-65535")
    return port


def family_for_host(host: str | None, sock_type: int) -> tuple[int, tuple]:
    """Resolve a host for a passive bind: (family, sockaddr without port)."""
    if not host:
        return socket.AF_INET, ("0.0.0.0",)
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
        return (socket.AF_INET6, (host,)) if ip.version == 6 else (socket.AF_INET, (host,))
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, 0, sock_type, 0, socket.AI_PASSIVE)
    fam, _t, _p, _c, sa = infos[0]
    return fam, (sa[0],)


def create_listener(family: int, sock_type: int, address: str | tuple[Any, ...], *,
                    v6only: bool | None = None, backlog: int = DEFAULT_BACKLOG,
                    reuseport: bool = False, listen: bool = True) -> socket.socket:
    """Create, bind and (for streams) listen. TCP listeners get TCP_NODELAY,
    which Linux copies onto every accepted socket (uvicorn --workers loses
    90% of its keep-alive throughput without it)."""
    proto = socket.IPPROTO_TCP if (sock_type == socket.SOCK_STREAM and family != socket.AF_UNIX) else 0
    sock = socket.socket(family, sock_type, proto)
    try:
        if family != socket.AF_UNIX:
            if sock_type == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and v6only is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(address)
        if listen and sock_type == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def shortest_unix_path(path: str) -> str:
    """The shortest spelling of an absolute unix socket path from our cwd
    (a relative one dodges the 108-byte sun_path limit, as Node does)."""
    if path.startswith("\0") or not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


class UnixName:
    """A unix socket file the primary created, held by its directory's fd.

    The primary binds a private name and hard-links the public one to it
    (asyncio's create_unix_server unlinks the path before binding, so every
    query puts the link back). Everything after creation goes through the
    directory fd opened once, and a name is removed only while it is still
    our socket (same inode): a directory swapped for a symlink, or a file
    put in place of our name, is never followed or deleted."""

    def __init__(self, path: str):
        directory, self.public = os.path.split(path)
        if not self.public:
            raise ValueError(f"unix socket path {path!r} names a directory")
        self.path = path
        self.dirfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.private = f".pyc{os.getpid()}-{next(_private_names)}"
        self.inode: tuple[int, int] | None = None

    def _stat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.dirfd, follow_symlinks=False)
        except OSError:
            return None

    def exists(self) -> bool:
        return self._stat(self.public) is not None

    def bind_address(self) -> str:
        """Where to bind: the private name, reached through our directory fd."""
        return f"/proc/self/fd/{self.dirfd}/{self.private}"

    def bound(self) -> None:
        st = self._stat(self.private)
        if st is None or not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EIO, f"the socket file for {self.path} vanished after bind")
        self.inode = (st.st_dev, st.st_ino)
        self.relink()

    def _ours(self, name: str) -> bool:
        st = self._stat(name)
        return st is not None and stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.inode

    def relink(self) -> None:
        """Put the public name back if an app unlinked it; never replace a
        file that is someone else's."""
        if self.inode is None or self.exists() or not self._ours(self.private):
            return
        try:
            os.link(self.private, self.public, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd,
                    follow_symlinks=False)
        except OSError:
            pass

    def remove(self) -> None:
        """Unlink both names while they are still our socket, then let go."""
        if self.dirfd < 0:
            return
        for name in (self.public, self.private):
            if self.inode is not None and self._ours(name):
                try:
                    os.unlink(name, dir_fd=self.dirfd)
                except OSError:
                    pass
        os.close(self.dirfd)
        self.dirfd = -1


_private_names = iter(range(1, 1 << 62))


def socket_from_fd(fd: int) -> socket.socket:
    """Wrap a duplicate of ``fd`` (which must be a socket) as a socket object."""
    st = os.fstat(fd)
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.ENOTSOCK, f"fd {fd} is not a socket")
    return socket.socket(fileno=os.dup(fd))


def describe(sock: socket.socket, fd: int | None = None) -> Address:
    """The Address object of a bound socket."""
    fam, typ = sock.family, sock.type
    name = sock.getsockname()
    if fam == socket.AF_UNIX:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        return Address(name or None, None, -1, fd)
    udp = typ == socket.SOCK_DGRAM
    if fam == socket.AF_INET6:
        return Address(name[0], name[1], "udp6" if udp else 6, fd)
    return Address(name[0], name[1], "udp4" if udp else 4, fd)


def kind_name(family: int, sock_type: int) -> str:
    if family == socket.AF_UNIX:
        return "unix"
    return "udp" if sock_type == socket.SOCK_DGRAM else "tcp"
