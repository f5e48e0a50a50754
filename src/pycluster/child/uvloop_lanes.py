"""uvloop under round-robin: serve an rr lane from Python, on uvloop's loop.

uvloop's ``create_server`` binds a Python socket (that bind is shared as any
other), then detaches it and listens and accepts in libuv. A round-robin lane
is no listener: only our ``recvmsg`` can take the connections the primary hands
down it. So, in a worker, ``uvloop.Loop.create_server`` is wrapped: a lane is
watched with ``add_reader``, each hand-off is taken by the binding's
``accept()`` and given to uvloop's own ``connect_accepted_socket``; from there
on the connection is uvloop's, as if libuv had accepted it. Sockets that are
not lanes (``none``, ``reuseport``, local binds) go to uvloop unchanged.

:mod:`~pycluster.child.uvloop_hook` wraps uvloop when it is imported.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .registry import Registry

_RETRY_DELAY = 1.0  # seconds before taking hand-offs again after accept failed (asyncio's ACCEPT_RETRY_DELAY)
_BATCH = 64  # hand-offs taken per wake-up before the loop runs other callbacks
_WRAPPED = "__pycluster_lanes__"


class LaneServer(asyncio.AbstractServer):
    """An ``asyncio.Server`` look-alike over rr lanes (and uvloop servers for the rest)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: list[socket.socket],
                 others: list[asyncio.AbstractServer], protocol_factory: Callable[[], asyncio.BaseProtocol],
                 ssl_options: dict[str, Any]):
        self._loop = loop
        self._lanes = lanes
        self._others = others
        self._factory = protocol_factory
        self._ssl = ssl_options
        self._serving = False
        self._closed = False
        self._pending: set[asyncio.Task[Any]] = set()

    # -- asyncio.AbstractServer -----------------------------------------------------
    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        found = list(self._lanes)
        for other in self._others:
            found.extend(getattr(other, "sockets", ()) or ())
        return tuple(found)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()
        for other in self._others:
            await other.start_serving()

    async def serve_forever(self) -> None:
        await self.start_serving()
        waiter = self._loop.create_future()
        try:
            await waiter  # cancelled by the caller, as asyncio's own serve_forever
        finally:
            self.close()
            await self.wait_closed()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for lane in self._lanes:
            try:
                self._loop.remove_reader(lane.fileno())
            except (ValueError, OSError):
                pass
            lane.close()  # the primary hears that this worker's lane is closed
        for other in self._others:
            other.close()

    async def wait_closed(self) -> None:
        for other in self._others:
            await other.wait_closed()

    # -- serving the lanes ----------------------------------------------------------
    def _start(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for lane in self._lanes:
            lane.setblocking(False)
            self._loop.add_reader(lane.fileno(), self._take, lane)

    def _take(self, lane: socket.socket) -> None:
        """The lane is readable: take what the primary handed down."""
        for _ in range(_BATCH):
            try:
                conn, _addr = lane.accept()  # the binding's recvmsg (child/bindings/round_robin.py)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the primary takes the hand-off back
                self._loop.call_exception_handler({"message": "pycluster: cannot take a connection",
                                                   "exception": exc, "socket": lane})
                # The lane stays readable: pause, as asyncio's accept loop does, instead of spinning.
                self._loop.remove_reader(lane.fileno())
                self._loop.call_later(_RETRY_DELAY, self._resume, lane)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self, lane: socket.socket) -> None:
        if self._serving and lane.fileno() >= 0:
            self._loop.add_reader(lane.fileno(), self._take, lane)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, **self._ssl)
        except Exception as exc:  # noqa: BLE001 - one connection failed (TLS handshake, closed early)
            conn.close()
            if not isinstance(exc, (ConnectionError, OSError)):
                self._loop.call_exception_handler({"message": "pycluster: cannot serve a connection",
                                                   "exception": exc})


def wrap(module: ModuleType, registry: Registry) -> None:
    """Wrap ``module.Loop.create_server`` (uvloop's Python subclass of its loop)."""
    loop_class = getattr(module, "Loop", None)
    if loop_class is None or getattr(loop_class, _WRAPPED, False):
        return
    original = loop_class.create_server

    def is_lane(sock: socket.socket) -> bool:
        try:
            binding = registry.get(sock.fileno())
        except OSError:
            return False
        return binding is not None and binding.mode == "rr"

    async def create_server(self: Any, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: Any = None, port: Any = None, *, family: int = socket.AF_UNSPEC,
                            flags: int = socket.AI_PASSIVE, sock: socket.socket | None = None,
                            backlog: int = 100, ssl: Any = None, reuse_address: bool | None = None,
                            reuse_port: bool | None = None, ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None, start_serving: bool = True) -> Any:
        options = {"backlog": backlog, "ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout,
                   "ssl_shutdown_timeout": ssl_shutdown_timeout, "start_serving": start_serving}
        if sock is not None:
            if not is_lane(sock):
                return await original(self, protocol_factory, host, port, sock=sock, **options)
            socks = [sock]
        elif isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            socks = await _bind_all(self, host, port, family, flags, reuse_address, reuse_port, backlog)
            if not any(is_lane(s) for s in socks):
                for s in socks:  # nothing round-robin here: uvloop binds as it always does
                    s.close()
                return await original(self, protocol_factory, host, port, family=family, flags=flags,
                                      reuse_address=reuse_address, reuse_port=reuse_port, **options)
        else:
            return await original(self, protocol_factory, host, port, family=family, flags=flags, sock=sock,
                                  reuse_address=reuse_address, reuse_port=reuse_port, **options)
        lanes = [s for s in socks if is_lane(s)]
        others = []
        for s in socks:
            if not is_lane(s):
                others.append(await original(self, protocol_factory, sock=s, **options))
        ssl_options: dict[str, Any] = {}
        if ssl is not None:
            ssl_options = {"ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout,
                           "ssl_shutdown_timeout": ssl_shutdown_timeout}
        server = LaneServer(self, lanes, others, protocol_factory, ssl_options)
        if start_serving:
            server._start()
        return server

    loop_class.create_server = create_server
    setattr(loop_class, _WRAPPED, True)


async def _bind_all(loop: asyncio.AbstractEventLoop, host: Any, port: Any, family: int, flags: int,
                    reuse_address: bool | None, reuse_port: bool | None, backlog: int) -> list[socket.socket]:
    """Bind and listen a Python socket for each address of ``host`` (shared through the primary)."""
    hosts: Sequence[Any] = [None] if host in (None, "") else [host] if isinstance(host, str) else list(host)
    infos: list[tuple[int, int, int, Any]] = []
    for name in hosts:
        for info in await loop.getaddrinfo(name, port, family=family, type=socket.SOCK_STREAM, flags=flags):
            if (info[0], info[4]) not in [(i[0], i[3]) for i in infos]:
                infos.append((int(info[0]), int(info[1]), int(info[2]), info[4]))
    socks: list[socket.socket] = []
    try:
        for af, stype, proto, addr in infos:
            s = socket.socket(af, stype, proto)
            socks.append(s)
            if reuse_address is not False:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if af == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {addr!r}:"
                                         f" {exc.strerror or exc}") from None
            s.listen(backlog)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
