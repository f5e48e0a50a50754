"""What every binding shares: the state of one shared socket in a worker,
and the default behaviour of the wrapped socket methods.

A binding is what the primary's reply to a ``query`` made of one of the
app's sockets; its class is chosen once, by the reply's ``mode``
(:data:`pycluster.child.bindings.BINDINGS`), and the interception only
dispatches to it.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from typing import Any, ClassVar, Protocol

from ..addresses import sockname
from ..inflight import InFlight


class SocketOps:
    """``socket.socket``'s own methods, taken before the interception wraps them."""

    __slots__ = ("bind", "listen", "accept", "getsockname", "real_close", "detach", "setsockopt")

    def __init__(self) -> None:
        cls = socket.socket
        self.bind: Any = cls.bind
        self.listen: Any = cls.listen
        self.accept: Any = cls.accept
        self.getsockname: Any = cls.getsockname
        self.real_close: Any = cls._real_close  # type: ignore[attr-defined]
        self.detach: Any = cls.detach
        self.setsockopt: Any = cls.setsockopt


ORIGINAL = SocketOps()


def running_loop() -> Any:
    """The asyncio loop running in this thread, if any (without importing asyncio)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    return asyncio._get_running_loop()


def c_server() -> str:
    """Which C server took a socket, for a message: uvloop when it runs this thread's loop."""
    loop = running_loop()
    module = type(loop).__module__ if loop is not None else ""
    return "uvloop/libuv" if module.startswith("uvloop") else "C code"


class Notices(Protocol):
    """What a binding tells the primary (:class:`pycluster.child.link.PrimaryLink`)."""

    def notify_listening(self, key: str, address: dict[str, Any]) -> None: ...

    def notify_closed(self, key: str) -> None: ...


class Tomb:
    """A socket that is never readable: installed under listeners we stop."""

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def fileno(self) -> int:
        if self._pair is None:
            a, b = socket.socketpair()
            a.setblocking(False)
            self._pair = (a, b)
        return self._pair[0].fileno()


class SpareFd:
    """One descriptor kept in reserve, freed just for a lane's recvmsg.

    A connection's fd arriving when we are out of descriptors would be
    dropped by the kernel (MSG_CTRUNC) and the client reset. Without a
    reserve, accept fails as a plain accept() does (EMFILE; asyncio pauses
    and retries) and the connection stays in the lane, where the primary
    takes it back after handoff_timeout and gives it to another worker.
    """

    def __init__(self) -> None:
        self._fd = -1
        # The reserve is a dup of this one: on the per-connection path a dup
        # costs a fifth of an open("/dev/null") (0.7 against 3 us here), and
        # asyncio's accept loop calls accept twice per connection.
        self._source = -1
        self.lost = 0  # hand-offs lost to MSG_CTRUNC
        self._warned = 0.0  # when we last said so

    def use(self) -> None:
        if self._fd < 0:
            self.restore()
            if self._fd < 0:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        os.close(self._fd)
        self._fd = -1

    def restore(self) -> None:
        if self._fd < 0:
            try:
                if self._source < 0:
                    self._source = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                self._fd = os.dup(self._source)
            except OSError:
                pass

    def lost_one(self) -> None:
        """Another thread took the reserve: the client got a reset."""
        self.lost += 1
        now = time.monotonic()
        if now - self._warned >= 1.0:
            self._warned = now
            sys.stderr.write(f"pycluster: out of file descriptors: {self.lost} handed-off connection(s) lost"
                             " so far (raise the worker's RLIMIT_NOFILE)\n")


class BindingContext:
    """What bindings share in one worker: the primary, the exit state, the
    tomb, the rr lanes' spare descriptor and the accepted connections."""

    def __init__(self, primary: Notices, signalled: threading.Event, ops: SocketOps = ORIGINAL,
                 worker_id: int = 0, inflight: InFlight | None = None):
        self.primary = primary
        self.worker_id = worker_id  # for messages
        self.signalled = signalled  # set once the post-disconnect signal was sent
        self.ops = ops
        self.inflight = InFlight() if inflight is None else inflight
        self.tomb = Tomb()
        self.spare = SpareFd()


class Binding:
    """One of the app's sockets, shared through the primary."""

    mode: ClassVar[str]  # the primary's reply ``mode`` this class serves
    # Entombed by stop_accepting() on a disconnect (rr: the primary closes the lane).
    retire_on_disconnect: ClassVar[bool] = True

    def __init__(self, ctx: BindingContext, reply: dict[str, Any], base: tuple[Any, ...], index: int,
                 family: int, stream: bool):
        self.ctx = ctx
        self.key: str = str(reply.get("key"))
        self.base = base  # the index's key: (address, port, type, fd)
        self.index = index
        self.address: dict[str, Any] = reply.get("address") or {}
        self.family = family
        self.stream = stream
        self.sockname = sockname(family, self.address)
        self.loop: Any = None  # the asyncio loop the app serves it on
        self.listening = False
        self.dead = False

    # -- becoming the app's socket (per policy) ------------------------------------
    def adopt(self, sock: socket.socket, fds: list[int], original: Any) -> None:
        """Make the app's ``sock`` (bound to ``original``) serve this binding;
        takes ownership of ``fds``. Raises OSError as a bind would."""
        raise NotImplementedError

    def open(self, family: int, stype: int, fds: list[int]) -> socket.socket:
        """A new socket serving this binding (``pycluster.listen()``); takes ``fds``."""
        raise NotImplementedError

    def where(self) -> str:
        """The address, as a message names it."""
        if self.family == socket.AF_UNIX:
            return str(self.sockname)
        host, port = self.address.get("address"), self.address.get("port")
        return f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"

    # -- the wrapped socket methods ---------------------------------------------------
    def bound(self) -> None:
        """The socket is in place: a datagram socket serves at once."""
        self.loop = running_loop()
        if not self.stream:
            self.listening = True
            self.ctx.primary.notify_listening(self.key, self.address)

    def listen(self, sock: socket.socket, args: tuple[Any, ...]) -> None:
        self._listen(sock, args)
        if self.loop is None:  # asyncio's Server calls listen() on its own loop
            self.loop = running_loop()
        self._announce()

    def _listen(self, sock: socket.socket, args: tuple[Any, ...]) -> None:
        """shared/rr: the primary's listener already listens with its backlog."""

    def accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        if self.dead:
            return self.accept_nothing(sock)
        conn, addr = self._accept(sock)
        self.ctx.inflight.add(conn)  # so a drain after a disconnect waits for it (SPEC 2)
        return conn, addr

    def _accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        conn, addr = self.ctx.ops.accept(sock)
        return conn, addr

    def getsockname(self, sock: socket.socket) -> Any:
        if self.family == socket.AF_UNIX:
            return self.sockname  # the path the app bound, not the primary's private name
        return self.ctx.ops.getsockname(sock)

    def setsockopt(self, sock: socket.socket, args: tuple[Any, ...]) -> None:
        self.ctx.ops.setsockopt(sock, *args)

    def hand_over(self, sock: socket.socket) -> None:
        """C code takes the fd and will listen and accept on it itself (uvloop):
        the listener the primary sent already listens, so it serves now."""
        self._announce()

    def _announce(self) -> None:
        if self.stream and not self.listening and not self.dead:
            self.listening = True
            self.ctx.primary.notify_listening(self.key, self.address)

    # -- stopping -------------------------------------------------------------------
    def accept_nothing(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """accept() on a listener the cluster stopped (we are being disconnected).

        Non-blocking callers get EAGAIN. A blocking caller first waits for the
        SIGTERM that follows the disconnect (the default handler's SystemExit
        ends it there, at once or once the accepted connections are closed),
        then gets the error a closed listener gives, so a server loop with its
        own SIGTERM handler (socketserver) sees its shutdown flag."""
        if sock.gettimeout() == 0.0:
            raise BlockingIOError(errno.EAGAIN, "no connection (the cluster stopped this listener)")
        self.ctx.signalled.wait(2.0)
        if self.ctx.inflight.draining:
            # The default handler is letting the accepted connections finish: an
            # EBADF now would end an accept loop (and its serving threads) early.
            self.ctx.inflight.wait_idle()
        raise OSError(errno.EBADF, "listener closed by the cluster (worker disconnected)")

    def entomb(self, fd: int) -> None:
        """Stop for good: the fd stays open (the app owns it) but is never readable."""
        self.dead = True
        self.listening = False
        try:
            os.dup2(self.ctx.tomb.fileno(), fd, inheritable=False)
        except OSError:
            pass


class DescriptorBinding(Binding):
    """The primary sent a descriptor that takes the place of the app's socket."""

    def adopt(self, sock: socket.socket, fds: list[int], original: Any) -> None:
        if not fds:
            raise OSError(errno.EIO, "the primary's listener was lost in transit")
        timeout = sock.gettimeout()
        os.dup2(fds[0], sock.fileno(), inheritable=False)
        for fd in fds:
            os.close(fd)
        sock.settimeout(timeout)  # re-apply blocking mode to the new file

    def open(self, family: int, stype: int, fds: list[int]) -> socket.socket:
        if not fds:
            raise OSError(errno.EIO, "the primary's listener was lost in transit")
        for fd in fds[1:]:
            os.close(fd)
        return socket.socket(family, stype, 0, fds[0])
