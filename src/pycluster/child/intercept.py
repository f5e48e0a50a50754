"""Transparent port sharing in a worker: bind interception (dispatch only).

``socket.socket.bind`` (and ``listen``, ``accept``, ``getsockname``,
``setsockopt``, ``close``, ``detach``) are wrapped at class level in
workers, so every server built on Python sockets - asyncio
``create_server`` / ``start_server``, ``socketserver`` / ``http.server``,
uvicorn and aiohttp on asyncio, a plain socket - asks the primary for the
address instead of binding it. The primary's reply names a ``mode``, which
picks the socket's binding class once (``bindings.BINDINGS``: ``rr``,
``shared``, ``reuseport``); every later call on that socket goes to its
binding. Which binds are shared at all is :mod:`pycluster.child.addresses`'
question; binds inside :func:`exclusive` stay local too.

A bind error comes back as the ``OSError`` a plain bind raises, with its errno.
"""

from __future__ import annotations

import contextlib
import dis
import errno
import os
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..core import sockets as _sockets
from ..ipc.messages import ACT, QUERY
from .addresses import BindQuery, classify
from .bindings import BINDINGS, Binding, BindingContext
from .link import PrimaryLink
from .registry import Registry

_local = threading.local()
_active: Interceptor | None = None  # the one that wrapped socket.socket (process-wide)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Binds in this block are local to this worker (Node's ``exclusive: true``)."""
    previous = getattr(_local, "exclusive", False)
    _local.exclusive = True
    try:
        yield
    finally:
        _local.exclusive = previous


def __getattr__(name: str) -> Any:
    if name == "listen_requests":  # queries sent to the primary (tests check bypasses send none)
        return 0 if _active is None else _active.link.requests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Interceptor:
    """Routes the wrapped socket methods to the bindings of ``registry``."""

    def __init__(self, registry: Registry, link: PrimaryLink, ctx: BindingContext,
                 bindings: Mapping[str, type[Binding]] = BINDINGS):
        self.registry = registry
        self.link = link
        self.ctx = ctx
        self._bindings = bindings

    def install(self) -> None:
        """Wrap ``socket.socket``'s methods (once per process)."""
        global _active
        ops = self.ctx.ops
        registry = self.registry

        def bind(sock: socket.socket, address: Any) -> None:
            self.bind(sock, address)

        def listen(sock: socket.socket, *args: Any) -> None:
            binding = registry.get(sock.fileno())
            if binding is None:
                return ops.listen(sock, *args)  # type: ignore[no-any-return]
            binding.listen(sock, args)

        def accept(sock: socket.socket) -> tuple[socket.socket, Any]:
            binding = registry.get(sock.fileno())
            if binding is None:
                conn, addr = ops.accept(sock)
                return conn, addr
            return binding.accept(sock)

        def getsockname(sock: socket.socket) -> Any:
            binding = registry.get(sock.fileno())
            return ops.getsockname(sock) if binding is None else binding.getsockname(sock)

        def setsockopt(sock: socket.socket, *args: Any) -> None:
            binding = registry.get(sock.fileno())
            if binding is None:
                return ops.setsockopt(sock, *args)  # type: ignore[no-any-return]
            binding.setsockopt(sock, args)

        def real_close(sock: socket.socket, *args: Any) -> None:
            self.forget(sock.fileno())
            ops.real_close(sock, *args)

        def detach(sock: socket.socket) -> int:
            binding = registry.get(sock.fileno())
            if binding is None or _python_keeps_fd(sys._getframe(1)):
                return int(ops.detach(sock))
            self.hand_over(sock, binding)
            return int(ops.detach(sock))

        wrapped = {"bind": bind, "listen": listen, "accept": accept, "getsockname": getsockname,
                   "setsockopt": setsockopt, "_real_close": real_close, "detach": detach}
        for name, fn in wrapped.items():
            setattr(socket.socket, name, fn)
        _active = self

    # -- binding through the primary ------------------------------------------------
    def bind(self, sock: socket.socket, address: Any) -> None:
        query = self._classify(sock, address)
        if query is None:
            self.ctx.ops.bind(sock, address)
            return
        base = query.key
        index = self.registry.indexes.allocate(base)
        try:
            reply, fds = self.link.ask(query.message(index))
            _check(reply, fds, "why")
            binding = self._binding(reply, fds, base, index, sock.family, sock.type == socket.SOCK_STREAM)
            binding.adopt(sock, fds, address)
        except BaseException:
            self.registry.indexes.release(base, index)
            raise
        self.registry.add(sock.fileno(), binding)
        binding.bound()

    def _classify(self, sock: socket.socket, address: Any) -> BindQuery | None:
        """What to ask the primary for, or None to bind locally."""
        if getattr(_local, "exclusive", False) or not self.link.connected():
            return None
        return classify(sock.family, sock.type, address, sock.getsockopt)

    def _binding(self, reply: dict[str, Any], fds: list[int], base: tuple[Any, ...], index: int,
                 family: int, stream: bool) -> Binding:
        """The binding the reply's mode names (chosen here, once per socket)."""
        mode = reply.get("mode")
        cls = self._bindings.get(mode) if isinstance(mode, str) else None
        if cls is None:
            _close_all(fds)
            raise OSError(errno.EPROTO, f"unexpected reply from the primary: {reply!r}")
        return cls(self.ctx, reply, base, index, family, stream)

    def hand_over(self, sock: socket.socket, binding: Binding) -> None:
        """C code takes a shared socket's fd (uvloop's ``create_server``
        detaches the socket it bound, then listens and accepts in libuv):
        the binding gets it ready for a plain ``listen``/``accept`` and says
        it is listening, or raises the OSError that says why it cannot."""
        self.registry.forget(sock.fileno())
        try:
            binding.hand_over(sock)
        except OSError:
            # The C side owns the fd now and closes it itself: detach our socket
            # object first, so the caller's cleanup does not close it twice.
            self.ctx.ops.detach(sock)
            if not binding.dead:
                self.link.notify_closed(binding.key)
            raise

    def forget(self, fd: int) -> None:
        """The app closed ``fd``: a socket still shared tells the primary."""
        binding = self.registry.forget(fd)
        if binding is not None and not binding.dead:
            self.link.notify_closed(binding.key)

    # -- pycluster.listen() and listeners() -------------------------------------------
    def listen_address(self, address: Any = None, *, kind: str = "tcp",
                       backlog: int = _sockets.DEFAULT_BACKLOG, fd: int | None = None,
                       exclusive_bind: bool = False) -> socket.socket:
        """The worker side of ``pycluster.listen()``."""
        if fd is not None or address is None:
            return self._from_primary(fd, backlog)[0]
        spec = _sockets.parse_address(address, kind)
        if spec.kind == "fd":
            return self._from_primary(spec.fd, backlog)[0]
        if spec.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bind_to: Any = spec.path
        else:
            stype = socket.SOCK_DGRAM if spec.kind == "udp" else socket.SOCK_STREAM
            family, host = _sockets.family_for_host(spec.host, stype)
            sock = socket.socket(family, stype)
            bind_to = (host[0], spec.port)
        try:
            if exclusive_bind:
                with exclusive():
                    sock.bind(bind_to)
            else:
                sock.bind(bind_to)
            if sock.type == socket.SOCK_STREAM:
                sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def primary_listeners(self, backlog: int = _sockets.DEFAULT_BACKLOG) -> list[socket.socket]:
        """Every listener of the primary (``pycluster run --bind`` ...), in order."""
        first, count = self._from_primary(None, backlog)
        return [first] + [self._from_primary(None, backlog, master=i)[0] for i in range(1, count)]

    def _from_primary(self, fd: int | None, backlog: int, master: int = 0) -> tuple[socket.socket, int]:
        """A socket for the primary's listener ``master`` (or for the worker's own
        ``fd``), and how many listeners the primary has."""
        if not self.link.connected():
            raise OSError(errno.ENOTCONN, "not connected to a primary")
        query: dict[str, Any] = {ACT: QUERY}
        sent: tuple[int, ...] = ()
        if fd is not None:
            # fd N is this worker's own descriptor, sent along: the primary never
            # resolves a worker's number in its own fd table.
            os.fstat(fd)  # EBADF here, as a plain listen() on a closed fd
            query.update({"fd": fd, "address": None, "port": None, "address_type": None, "index": 0})
            sent = (fd,)
        else:
            query["master"] = master
        reply, fds = self.link.ask(query, sent)
        _check(reply, fds, "message")
        address = reply.get("address") or {}
        atype = address.get("address_type")
        family = _FAMILIES.get(atype, socket.AF_INET)
        stype = socket.SOCK_DGRAM if isinstance(atype, str) else socket.SOCK_STREAM
        base = ("master", reply.get("key"), atype, fd)
        binding = self._binding(reply, fds, base, 0, family, stype == socket.SOCK_STREAM)
        sock = binding.open(family, stype, fds)
        self.registry.indexes.claim(base, 0)
        self.registry.add(sock.fileno(), binding)
        binding.bound()
        if stype == socket.SOCK_STREAM:
            sock.listen(backlog)
        return sock, int(reply.get("masters") or 0)


_FAMILIES: dict[Any, int] = {4: socket.AF_INET, 6: socket.AF_INET6, -1: socket.AF_UNIX,
                             "udp4": socket.AF_INET, "udp6": socket.AF_INET6}


def _python_keeps_fd(caller: Any) -> bool:
    """Did Python code call ``detach()`` itself (``ssl.SSLSocket``'s re-wrap,
    ``socket.socket(fileno=s.detach())``)? Then Python keeps using the fd, as
    the same shared socket: its binding stays registered. A call from C code
    (uvloop's ``create_server``) leaves the caller's frame on another call:
    the last attribute it loaded before its current instruction is not ``detach``."""
    if caller is None:
        return False
    last = None
    for ins in dis.get_instructions(caller.f_code):
        if ins.offset >= caller.f_lasti:
            break
        if ins.opname in ("LOAD_METHOD", "LOAD_ATTR"):
            last = ins.argval
    return bool(last == "detach")


def _check(reply: dict[str, Any], fds: list[int], why: str) -> None:
    """A refusal becomes the OSError a plain bind or listen would raise."""
    if reply.get("errno"):
        _close_all(fds)
        code = int(reply["errno"])
        raise OSError(code, str(reply.get(why) or os.strerror(code)))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
