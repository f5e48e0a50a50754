"""``--metrics ADDR``: the master's HTTP endpoint, served from its asyncio loop.

``GET /healthz`` (200 while the master runs), ``GET /readyz`` (200 when every
wanted worker is ready, as ``status --check`` judges it; 503 otherwise) and
``GET /metrics`` (the Prometheus text format, ``master/metrics.py``). A
minimal HTTP/1.1 server: one request per connection, a bounded request head
and a deadline to send it, so a slow or hostile client never holds the loop.
The socket is bound before any worker starts (:func:`listen`): a busy address
fails ``pycluster run`` at once, as a ``--bind`` does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ..core.sockets import family_for_host, parse_address

HEAD_LIMIT = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds a client has to send its request
WRITE_TIMEOUT = 10.0  # seconds a client has to take the answer
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Route = Callable[[], tuple[int, str]]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


def listen(address: str) -> socket.socket:
    """The listening socket of ``--metrics ADDR`` (OSError naming the address)."""
    spec = parse_address(address)
    try:
        family, sockaddr = family_for_host(spec.host, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((sockaddr[0], spec.port))
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on --metrics {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class HttpEndpoint:
    """Serves ``routes`` (path -> () -> (status, body)) on a bound socket."""

    def __init__(self, sock: socket.socket, routes: dict[str, Route], on_error: Callable[[str], None]):
        self.sock = sock
        self.routes = routes
        self.on_error = on_error
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, sock=self.sock, limit=HEAD_LIMIT)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        else:
            self.sock.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                status, body, send = self.answer(head)
            except (asyncio.LimitOverrunError, ValueError):
                status, body, send = 413, "request head too large\n", True
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                return
            data = body.encode("utf-8")
            writer.write(self._head(status, len(data)) + (data if send else b""))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _head(self, status: int, length: int) -> bytes:
        return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n"
                + ("Allow: GET, HEAD\r\n" if status == 405 else "") + "\r\n").encode("ascii")

    def answer(self, head: bytes) -> tuple[int, str, bool]:
        """(status, body, whether to send the body: not for HEAD) for one request head."""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "bad request\n", True
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, "only GET and HEAD\n", True
        route = self.routes.get(target.split("?", 1)[0])
        if route is None:
            return 404, f"not found; try {', '.join(sorted(self.routes))}\n", True
        try:
            status, body = route()
        except Exception as exc:  # noqa: BLE001 - a failing route answers 500 and is logged, never kills the server
            import traceback
            self.on_error(f"--metrics {target}: {exc!r}\n{traceback.format_exc().rstrip()}")
            return 500, "internal error\n", True
        return status, body, method != "HEAD"
