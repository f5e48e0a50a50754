"""The demo cluster: an asyncio HTTP/1.1 server that says which worker answered.

Two ways to run it::

    python -m pycluster.examples.hello --workers 4 --port 8000   # a Node-style script
    pycluster run pycluster.examples.hello:main -w 4 --bind 127.0.0.1:8000

Every response is ``200 hello from worker N`` with ``X-Worker`` and ``X-Pid``
headers. On SIGTERM a worker stops accepting, answers each further request on
its open keep-alive connections with ``Connection: close``, closes idle
connections after a short grace, and exits 0 once they are gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from typing import Any

import pycluster as cluster

IDLE_GRACE = 2.0  # seconds an idle keep-alive connection may linger while draining


class _Responses:
    """Pre-built responses, refreshed once a second (the Date header)."""

    def __init__(self, worker_id: int):
        self.body = f"hello from worker {worker_id}\n".encode()
        self.extra = f"X-Worker: {worker_id}\r\nX-Pid: {os.getpid()}\r\n".encode()
        self.second = -1
        self.keep_alive = b""
        self.close = b""

    def get(self) -> tuple[bytes, bytes]:
        now = int(time.time())
        if now != self.second:
            self.second = now
            head = (b"HTTP/1.1 200 OK\r\nServer: pycluster-hello\r\nDate: "
                    + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
                    + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(self.body)).encode() + b"\r\n" + self.extra)
            self.keep_alive = head + b"\r\n" + self.body
            self.close = head + b"Connection: close\r\n\r\n" + self.body
        return self.keep_alive, self.close


class HelloProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1: keep-alive, Connection: close, HTTP/1.0, Content-Length bodies."""

    def __init__(self, app: HelloServer):
        self.app = app
        self.transport: Any = None  # the asyncio transport, once connected
        self.buf = b""
        self.idle = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.app.maybe_done()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        transport = self.transport
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    transport.close()
                    return
                self.idle = not buf
                break
            head = buf[:end].lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                try:
                    length = int(head[i + 17:j if j >= 0 else len(head)].strip())
                except ValueError:
                    transport.close()
                    return
            total = end + 4 + length
            if len(buf) < total:
                self.idle = False
                break
            buf = buf[total:]
            line_end = head.find(b"\r\n")
            first = head if line_end < 0 else head[:line_end]
            if first.endswith(b"http/1.0"):
                close = b"\r\nconnection: keep-alive" not in head
            else:
                close = b"\r\nconnection: close" in head
            keep_alive, closing = self.app.responses.get()
            if close or self.app.draining:
                transport.write(closing)
                transport.close()
                self.buf = b""
                return
            transport.write(keep_alive)
        self.buf = buf


class HelloServer:
    def __init__(self, worker_id: int):
        self.responses = _Responses(worker_id)
        self.connections: set[HelloProtocol] = set()
        self.draining = False
        self.done: asyncio.Future | None = None

    async def serve(self, socks: list[socket.socket] | None = None, host: str = "127.0.0.1",
                    port: int = 8000) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        if socks:
            servers = [await loop.create_server(lambda: HelloProtocol(self), sock=s) for s in socks]
        else:
            servers = [await loop.create_server(lambda: HelloProtocol(self), host, port, backlog=2048)]
        loop.add_signal_handler(signal.SIGTERM, self.drain, servers)
        await self.done

    def drain(self, servers: list) -> None:
        """Stop accepting; finish open connections; leave when none is left."""
        if self.draining:
            return
        self.draining = True
        for server in servers:
            server.close()
        loop = asyncio.get_running_loop()
        loop.call_later(IDLE_GRACE, self._close_idle)
        self.maybe_done()

    def _close_idle(self) -> None:
        for conn in list(self.connections):
            if conn.idle and conn.transport is not None:
                conn.transport.close()
        asyncio.get_running_loop().call_later(IDLE_GRACE, self._close_all)

    def _close_all(self) -> None:
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    def maybe_done(self) -> None:
        if self.draining and not self.connections and self.done is not None and not self.done.done():
            self.done.set_result(None)


def _worker_id() -> int:
    return cluster.worker.id if cluster.worker is not None else 0


def main() -> None:
    """The ``pycluster run`` target: serve on every listener of the master."""
    socks = cluster.listeners() if cluster.is_worker else None
    asyncio.run(HelloServer(_worker_id()).serve(socks))


def _script(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m pycluster.examples.hello",
                                     description="A Node-style cluster of asyncio HTTP workers.")
    parser.add_argument("--workers", "-w", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", "-p", type=int, default=8000)
    args = parser.parse_args(argv)
    if cluster.is_primary:
        print(f"primary {os.getpid()}: starting {args.workers} worker{'' if args.workers == 1 else 's'} on "
              f"http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
        cluster.on("listening", lambda worker, address:
                   print(f"worker {worker.id} (pid {worker.pid}) listening on {address.address}:{address.port}",
                         flush=True))

        def replace(worker: cluster.Worker, code: int | None, signal_name: str | None) -> None:
            if not worker.exited_after_disconnect:
                print(f"worker {worker.id} died ({signal_name or code}); starting another", flush=True)
                cluster.fork()

        cluster.on("exit", replace)
        for _ in range(args.workers):
            cluster.fork()
        return cluster.run()
    # A worker: bind as usual; the primary shares its listener with us.
    asyncio.run(HelloServer(_worker_id()).serve(host=args.host, port=args.port))
    return 0


if __name__ == "__main__":
    sys.exit(_script())
