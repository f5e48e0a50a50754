"""Transparent port sharing in a worker: bind interception.

``socket.socket.bind`` (and ``listen``, ``accept``, ``getsockname``,
``close``) are wrapped at class level in workers, so every server built on
Python sockets - asyncio ``create_server`` / ``start_server``,
``socketserver`` / ``http.server``, uvicorn and aiohttp on asyncio, a plain
socket - asks the primary for the address instead of binding it:

* ``shared`` (SCHED_NONE, and every UDP socket): the primary's listener is
  installed under the app's socket fd (``dup2``); the app accepts on it as
  on its own.
* ``rr`` (SCHED_RR): the app's fd becomes this worker's hand-off lane (see
  ``handles/round_robin.py``); ``accept()`` receives the connection the
  primary passed and acknowledges it.
* ``reuseport``: the app's own socket binds the address with SO_REUSEPORT
  (the primary resolved port 0 and checked the address).

Left alone (bound locally, never shared): sockets with SO_REUSEPORT set by
the app, binds inside ``exclusive()``, unix datagram sockets, unix
autobind, and sockets the app did not bind (a handle it received). A bind
error comes back as the ``OSError`` a plain bind raises, with its errno.

Node's handle key is kept: a worker's n-th concurrently open listener on
the same (address, port, type, fd) is index n, so every worker's first
``listen(0)`` shares one random port and second ones share another.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
import sys
import threading
from typing import Any

from ..core import sockets as _sockets
from ..errors import ClusterError
from ..ipc.channel import KIND_INTERNAL

_orig_bind = socket.socket.bind
_orig_listen = socket.socket.listen
_orig_accept = socket.socket.accept
_orig_getsockname = socket.socket.getsockname
_orig_real_close = socket.socket._real_close  # type: ignore[attr-defined]
_orig_detach = socket.socket.detach
_orig_setsockopt = socket.socket.setsockopt

_FD = struct.Struct("i")


def _running_loop() -> Any:
    """The asyncio loop running in this thread, if any (without importing asyncio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    return asyncio._get_running_loop()
_CMSG = socket.CMSG_SPACE(_FD.size)
QUERY_TIMEOUT = 30.0

_worker: Any = None
_registry: dict[int, _Bound] = {}
_indexes: dict[tuple, set[int]] = {}
_lock = threading.Lock()
_local = threading.local()
_tomb: tuple[socket.socket, socket.socket] | None = None
listen_requests = 0  # queries sent to the primary (tests check bypasses send none)


class _Bound:
    __slots__ = ("key", "base", "index", "mode", "address", "sockname", "loop", "listening",
                 "dead", "stream", "family")

    def __init__(self, key: str, base: tuple, index: int, mode: str, address: dict,
                 sockname: Any, loop: Any, stream: bool, family: int):
        self.key = key
        self.base = base
        self.index = index
        self.mode = mode
        self.address = address
        self.sockname = sockname
        self.loop = loop
        self.listening = False
        self.dead = False
        self.stream = stream
        self.family = family


def install(worker: Any) -> None:
    global _worker
    _worker = worker
    socket.socket.bind = _bind  # type: ignore[method-assign]
    socket.socket.listen = _listen  # type: ignore[method-assign]
    socket.socket.accept = _accept  # type: ignore[method-assign]
    socket.socket.getsockname = _getsockname  # type: ignore[method-assign]
    socket.socket._real_close = _real_close  # type: ignore[attr-defined]
    socket.socket.detach = _detach  # type: ignore[method-assign]
    socket.socket.setsockopt = _setsockopt  # type: ignore[method-assign]


@contextlib.contextmanager
def exclusive():
    """Binds in this block are local to this worker (Node's ``exclusive: true``)."""
    previous = getattr(_local, "exclusive", False)
    _local.exclusive = True
    try:
        yield
    finally:
        _local.exclusive = previous


# -- the wrapped methods --------------------------------------------------------
def _bind(self: socket.socket, address: Any) -> None:
    target = _classify(self, address)
    if target is None:
        return _orig_bind(self, address)
    return _shared_bind(self, *target)


def _listen(self: socket.socket, *args: Any) -> None:
    bound = _registry.get(self.fileno())
    if bound is None:
        return _orig_listen(self, *args)
    if bound.mode == "reuseport":
        _orig_listen(self, *args)
    if bound.loop is None:  # asyncio's Server calls listen() on its own loop
        bound.loop = _running_loop()
    # shared/rr: the primary's listener already listens with its backlog
    if not bound.listening and not bound.dead:
        bound.listening = True
        _notify_listening(bound)


def _accept(self: socket.socket) -> tuple[socket.socket, Any]:
    bound = _registry.get(self.fileno())
    if bound is None:
        return _orig_accept(self)
    if bound.dead:
        return _accept_nothing(self)
    if bound.mode != "rr":
        return _orig_accept(self)
    return _rr_accept(self, bound)


def _accept_nothing(sock: socket.socket) -> Any:
    """accept() on a listener the cluster stopped (we are being disconnected).

    Non-blocking callers get EAGAIN. A blocking caller first waits for the
    SIGTERM that follows the disconnect (the default handler's SystemExit
    ends it there), then gets the error a closed listener gives, so a
    server loop with its own SIGTERM handler (socketserver) sees its
    shutdown flag."""
    if sock.gettimeout() == 0.0:
        raise BlockingIOError(errno.EAGAIN, "no connection (the cluster stopped this listener)")
    from .runtime import _state
    _state.signalled.wait(2.0)
    raise OSError(errno.EBADF, "listener closed by the cluster (worker disconnected)")


def _getsockname(self: socket.socket) -> Any:
    bound = _registry.get(self.fileno())
    if bound is not None and (bound.mode == "rr" or bound.family == socket.AF_UNIX):
        return bound.sockname  # rr: the lane is no TCP socket; unix: the path the app bound
    return _orig_getsockname(self)


def _setsockopt(self: socket.socket, *args: Any) -> None:
    bound = _registry.get(self.fileno())
    if bound is not None and bound.mode == "rr":
        return None  # options of the primary's listener apply (TCP_NODELAY is set)
    return _orig_setsockopt(self, *args)


def _real_close(self: socket.socket, *args: Any) -> None:
    _forget(self.fileno())
    _orig_real_close(self, *args)


def _detach(self: socket.socket) -> int:
    _forget(self.fileno())
    return _orig_detach(self)


# -- binding through the primary ------------------------------------------------
def _classify(sock: socket.socket, address: Any) -> tuple | None:
    """What to ask the primary for, or None to bind locally."""
    worker = _worker
    if worker is None or not worker.is_connected() or getattr(_local, "exclusive", False):
        return None
    family, stype = sock.family, sock.type
    if stype not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        return None
    if family in (socket.AF_INET, socket.AF_INET6):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
                return None  # the app asked for its own reuseport socket
        except OSError:
            pass
        if not isinstance(address, tuple) or len(address) < 2:
            return None
        host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode()
        host = _numeric_host(host or "", family, stype)
        udp = stype == socket.SOCK_DGRAM
        atype: Any = ("udp6" if family == socket.AF_INET6 else "udp4") if udp else (
            6 if family == socket.AF_INET6 else 4)
        v6only = None
        if family == socket.AF_INET6:
            v6only = bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        return ({"address": host, "port": int(port), "address_type": atype, "fd": None,
                 "v6only": v6only}, address)
    if family == socket.AF_UNIX and stype == socket.SOCK_STREAM:
        path = address
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if not isinstance(path, str) or not path:
            return None  # autobind
        if not path.startswith("\0"):
            path = os.path.abspath(path)
        return ({"address": path, "port": None, "address_type": -1, "fd": None}, address)
    return None


def _numeric_host(host: str, family: int, stype: int) -> str:
    if not host:
        return "0.0.0.0" if family == socket.AF_INET else "::"
    try:
        ipaddress.ip_address(host.split("%")[0])
        return host
    except ValueError:
        infos = socket.getaddrinfo(host, None, family, stype, 0, socket.AI_PASSIVE)
        return infos[0][4][0]


def _shared_bind(sock: socket.socket, query: dict, original: Any) -> None:
    base = (query["address"], query["port"], query["address_type"], query["fd"])
    with _lock:
        used = _indexes.setdefault(base, set())
        index = 0
        while index in used:
            index += 1
        used.add(index)
    try:
        reply, fds = _ask({"act": "query", **query, "index": index})
    except BaseException:
        _release_index(base, index)
        raise
    if reply.get("errno"):
        _release_index(base, index)
        for fd in fds:
            os.close(fd)
        code = int(reply["errno"])
        raise OSError(code, str(reply.get("why") or os.strerror(code)))
    _install(sock, reply, fds, base, index, original)


def _ask(query: dict, fds: tuple[int, ...] = ()) -> tuple[dict, list[int]]:
    global listen_requests
    listen_requests += 1
    try:
        reply, fds = _worker._channel.request_sync(query, fds, timeout=QUERY_TIMEOUT)
    except ClusterError as exc:
        raise OSError(errno.EAGAIN if exc.code == "ETIMEDOUT" else errno.ENOTCONN,
                      f"cannot share this address: {exc}") from exc
    return reply, fds


def _install(sock: socket.socket, reply: dict, fds: list[int], base: tuple, index: int,
             original: Any) -> None:
    mode = reply.get("mode")
    address = reply.get("address") or {}
    stream = sock.type == socket.SOCK_STREAM
    timeout = sock.gettimeout()
    if mode in ("rr", "shared"):
        if not fds:
            _release_index(base, index)
            raise OSError(errno.EIO, "the primary's listener was lost in transit")
        os.dup2(fds[0], sock.fileno(), inheritable=False)
        for fd in fds:
            os.close(fd)
        sock.settimeout(timeout)  # re-apply blocking mode to the new file
    elif mode == "reuseport":
        for fd in fds:
            os.close(fd)
        _orig_setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if stream:
            _orig_setsockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = address.get("address") or base[0]
        port = address.get("port")
        target = (host, port) if sock.family == socket.AF_INET else (host, port) + tuple(original[2:4])
        try:
            _orig_bind(sock, target)
        except BaseException:
            _release_index(base, index)
            _worker._channel.send(KIND_INTERNAL, {"act": "close", "key": reply.get("key")})
            raise
    else:
        _release_index(base, index)
        raise OSError(errno.EPROTO, f"unexpected reply from the primary: {reply!r}")
    sockname = _sockname(sock.family, address)
    loop = _running_loop()
    bound = _Bound(reply.get("key"), base, index, mode, address, sockname, loop, stream, sock.family)
    _registry[sock.fileno()] = bound
    if not stream:
        bound.listening = True
        _notify_listening(bound)


def _sockname(family: int, address: dict) -> Any:
    if family == socket.AF_UNIX:
        return address.get("address") or ""
    if family == socket.AF_INET6:
        return (address.get("address"), address.get("port"), 0, 0)
    return (address.get("address"), address.get("port"))


def _notify_listening(bound: _Bound) -> None:
    _worker._channel.send(KIND_INTERNAL, {"act": "listening", "key": bound.key,
                                          "address": bound.address})


def _release_index(base: tuple, index: int) -> None:
    with _lock:
        used = _indexes.get(base)
        if used is not None:
            used.discard(index)
            if not used:
                del _indexes[base]


def _forget(fd: int) -> None:
    bound = _registry.pop(fd, None) if fd >= 0 else None
    if bound is None:
        return
    _release_index(bound.base, bound.index)
    worker = _worker
    if worker is not None and not bound.dead and not worker._channel.closed:
        worker._channel.send(KIND_INTERNAL, {"act": "close", "key": bound.key})


# -- round-robin accept ---------------------------------------------------------------
def _rr_accept(sock: socket.socket, bound: _Bound) -> tuple[socket.socket, Any]:
    """Take the next connection the primary handed us (nothing goes back:
    the primary sees what we have not taken in its copy of the lane)."""
    fd = sock.fileno()
    while True:
        # A connection's fd arriving when we are out of descriptors would be
        # dropped by the kernel (MSG_CTRUNC) and the client reset. So keep one
        # descriptor in reserve and free it just for the recvmsg: without a
        # reserve, fail as a plain accept() does (EMFILE; asyncio pauses and
        # retries) and the connection stays in the lane, where the primary
        # takes it back after handoff_timeout and gives it to another worker.
        _use_spare()
        try:
            data, anc, flags, _addr = sock.recvmsg(1, _CMSG, socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError:
            # The primary closed the lane with our last ack unread: same as EOF.
            data, anc, flags = b"", [], 0
        finally:
            _restore_spare()
        if not data:
            # The primary closed this lane (we were disconnected): stop being
            # readable for good. Nothing will ever arrive again, so accept
            # behaves as on an idle listener: a blocking one waits (until the
            # SIGTERM that follows a disconnect), others report EAGAIN.
            _entomb(fd, bound)
            return _accept_nothing(sock)
        conn_fd = -1
        for level, ctype, cdata in anc:
            if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS and len(cdata) >= 4:
                conn_fd = _FD.unpack_from(cdata)[0]
        if conn_fd < 0:
            if flags & socket.MSG_CTRUNC:
                _warn_lost()  # another thread took the reserve: the client gets a reset
            continue
        conn = socket.socket(sock.family, sock.type, sock.proto, conn_fd)
        try:
            addr = conn.getpeername()
        except OSError:
            addr = None
        return conn, addr


_spare = -1
_lost = [0, 0.0]  # hand-offs lost to MSG_CTRUNC, when we last said so


def _use_spare() -> None:
    global _spare
    if _spare < 0:
        _restore_spare()
        if _spare < 0:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    os.close(_spare)
    _spare = -1


def _restore_spare() -> None:
    global _spare
    if _spare < 0:
        try:
            _spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass


def _warn_lost() -> None:
    import time
    _lost[0] += 1
    now = time.monotonic()
    if now - _lost[1] >= 1.0:
        _lost[1] = now
        sys.stderr.write(f"pycluster: out of file descriptors: {_lost[0]} handed-off connection(s) lost"
                         " so far (raise the worker's RLIMIT_NOFILE)\n")


# -- disconnect: stop accepting -----------------------------------------------------
def _tomb_fd() -> int:
    """A socket that is never readable: installed under listeners we stop."""
    global _tomb
    if _tomb is None:
        a, b = socket.socketpair()
        a.setblocking(False)
        _tomb = (a, b)
    return _tomb[0].fileno()


def _entomb(fd: int, bound: _Bound) -> None:
    bound.dead = True
    bound.listening = False
    try:
        os.dup2(_tomb_fd(), fd, inheritable=False)
    except OSError:
        pass


def stop_accepting(timeout: float = 2.0) -> None:
    """Stop taking connections on every shared listener of this worker.

    rr lanes are closed by the primary (and retire themselves on EOF).
    shared/reuseport listeners get the tomb under their fd; an asyncio loop
    that watches one first stops watching it (on its own thread), so its
    selector is never left with a stale registration.
    """
    pending = []
    for fd, bound in list(_registry.items()):
        if bound.dead or bound.mode == "rr":
            continue
        loop = bound.loop
        if loop is not None and loop.is_running() and not loop.is_closed():
            done = threading.Event()

            def stop(fd: int = fd, bound: _Bound = bound, loop: Any = loop, done: threading.Event = done) -> None:
                try:
                    loop.remove_reader(fd)
                finally:
                    _entomb(fd, bound)
                    done.set()

            try:
                loop.call_soon_threadsafe(stop)
                pending.append(done)
            except RuntimeError:
                _entomb(fd, bound)
        else:
            _entomb(fd, bound)
    for done in pending:
        done.wait(timeout)


# -- explicit listen ------------------------------------------------------------------
def listen(address: Any = None, *, kind: str = "tcp", backlog: int = _sockets.DEFAULT_BACKLOG,
           fd: int | None = None, exclusive_bind: bool = False) -> socket.socket:
    """The worker side of ``pycluster.listen()``."""
    if fd is not None or address is None:
        return _listen_master_or_fd(address, fd, backlog)
    spec = _sockets.parse_address(address, kind)
    if spec.kind == "fd":
        return _listen_master_or_fd(None, spec.fd, backlog)
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


def listeners(backlog: int = _sockets.DEFAULT_BACKLOG) -> list[socket.socket]:
    """Every listener of the primary (``pycluster run --bind`` ...), in order."""
    first, count = _listen_master_or_fd(None, None, backlog, master=0, with_count=True)
    return [first] + [_listen_master_or_fd(None, None, backlog, master=i) for i in range(1, count)]


def _listen_master_or_fd(address: Any, fd: int | None, backlog: int, master: int = 0,
                         with_count: bool = False) -> Any:
    if _worker is None or not _worker.is_connected():
        raise OSError(errno.ENOTCONN, "not connected to a primary")
    query: dict[str, Any] = {"act": "query"}
    sent: tuple[int, ...] = ()
    if fd is not None:
        # fd N is this worker's own descriptor, sent along: the primary never
        # resolves a worker's number in its own fd table.
        os.fstat(fd)  # EBADF here, as a plain listen() on a closed fd
        query.update({"fd": fd, "address": None, "port": None, "address_type": None, "index": 0})
        sent = (fd,)
    else:
        query["master"] = master
    reply, fds = _ask(query, sent)
    if reply.get("errno"):
        for f in fds:
            os.close(f)
        code = int(reply["errno"])
        raise OSError(code, reply.get("message") or os.strerror(code))
    address = reply.get("address") or {}
    atype = address.get("address_type")
    family = {4: socket.AF_INET, 6: socket.AF_INET6, -1: socket.AF_UNIX,
              "udp4": socket.AF_INET, "udp6": socket.AF_INET6}.get(atype, socket.AF_INET)
    stype = socket.SOCK_DGRAM if isinstance(atype, str) else socket.SOCK_STREAM
    mode = reply.get("mode")
    count = int(reply.get("masters") or 0)
    if mode == "reuseport":
        sock = socket.socket(family, stype)
        base = (address.get("address"), address.get("port"), atype, None)
        _install(sock, reply, fds, base, 0, (address.get("address"), address.get("port"), 0, 0))
        if stype == socket.SOCK_STREAM:
            sock.listen(backlog)
        return (sock, count) if with_count else sock
    if not fds:
        raise OSError(errno.EIO, "the primary's listener was lost in transit")
    sock = socket.socket(family, stype, 0, fds[0])
    for f in fds[1:]:
        os.close(f)
    base = ("master", reply.get("key"), atype, fd)
    with _lock:
        _indexes.setdefault(base, set()).add(0)
    bound = _Bound(reply.get("key"), base, 0, mode, address, _sockname(family, address), None,
                   stype == socket.SOCK_STREAM, family)
    _registry[sock.fileno()] = bound
    bound.loop = _running_loop()
    if stype == socket.SOCK_STREAM:
        sock.listen(backlog)
    else:
        bound.listening = True
        _notify_listening(bound)
    return (sock, count) if with_count else sock
