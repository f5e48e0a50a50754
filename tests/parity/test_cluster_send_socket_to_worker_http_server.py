"""Port of Node's test/parallel/test-cluster-send-socket-to-worker-http-server.js.

Node: the primary accepts a connection on its own server and sends the socket
to the worker, which feeds it into an HTTP server (``server.emit('connection',
socket)``). Asserts ``socket.server`` is that server and the worker exits 0.

Python translation: a received handle is a real ``socket.socket`` that the
stdlib server machinery accepts as a connection. Two flavours:

* ``socketserver``: ``http.server.HTTPServer(..., bind_and_activate=False)``
  serves it with ``process_request(sock, addr)``; the request handler's
  ``self.server`` is that HTTPServer (Node's ``socket.server``);
* ``asyncio``: ``loop.connect_accepted_socket`` with a stream protocol.

The primary's client (a thread) sends a real HTTP request and must get the
worker's response, then the worker disconnects and exits ``(0, None)`` and the
primary closes its server.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import asyncio
import http.server
import os
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

FLAVOUR = os.environ["FLAVOUR"]

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    server = socket.create_server(("127.0.0.1", 0))

    def forward(conn):
        worker.send("socket", conn)
        conn.close()

    def acceptor():
        conn, _ = server.accept()
        cluster._engine.loop.call_soon_threadsafe(forward, conn)

    def client():
        with socket.create_connection(server.getsockname(), timeout=10) as conn:
            conn.sendall(b"GET /hello HTTP/1.0\r\nHost: test\r\n\r\n")
            data = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        report(response=data.decode("latin-1"))

    def on_exit(code, signal):
        report(exit=[code, signal])
        server.close()

    def start():  # on the loop: the acceptor hands the connection back to it
        threading.Thread(target=acceptor, daemon=True).start()
        threading.Thread(target=client, daemon=True).start()

    worker.on("online", must_call(start, 1, "online"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    BODY = f"hello from worker {cluster.worker.id}".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        seen_server = None

        def do_GET(self):
            Handler.seen_server = self.server
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    def serve_socketserver(sock):
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        httpd.process_request(sock, sock.getpeername())
        httpd.server_close()
        report(handler_server_is_httpd=Handler.seen_server is httpd)

    def serve_asyncio(sock):
        async def main():
            done = asyncio.Event()

            async def on_client(reader, writer):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
                report(asyncio_request=request_line.decode().strip())
                done.set()

            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader, on_client), sock)
            await asyncio.wait_for(done.wait(), 10)

        asyncio.run(main())

    def on_message(message, sock):
        report(worker_got=[message, isinstance(sock, socket.socket)])
        serve = serve_socketserver if FLAVOUR == "socketserver" else serve_asyncio
        threading.Thread(target=lambda: (serve(sock), cluster.worker.disconnect()), daemon=True).start()

    cluster.worker.on("message", on_message)
"""


@pytest.mark.parametrize("flavour", ["socketserver", "asyncio"])
def test_cluster_send_socket_to_worker_http_server(run_script, flavour):
    result = run_script(SCRIPT, env={"FLAVOUR": flavour}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("worker_got") == ["socket", True]
    response = result.report("response")
    assert response.startswith("HTTP/1.0 200"), response
    assert response.endswith("hello from worker 1")
    if flavour == "socketserver":
        assert result.report("handler_server_is_httpd") is True
    else:
        assert result.report("asyncio_request") == "GET /hello HTTP/1.0"
    assert result.report("exit") == [0, None]
