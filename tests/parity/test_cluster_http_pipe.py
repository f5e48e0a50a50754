"""Port of Node's test/parallel/test-cluster-http-pipe.js.

Node: the worker's HTTP server listens on a unix socket path through the
cluster, and the worker sends an HTTP request to itself through that path.
Asserts the request is served, the connection's ``remoteAddress`` and
``localAddress`` are undefined (a unix socket has no IP address), 'DONE'
reaches the primary, and the worker exits (``process.exit()``).

Python translation: ``socketserver.UnixStreamServer`` + ``http.server``'s
request handler, bound to a path in the test's temporary directory (shared
through the primary), served by a thread; the worker's client connects to the
path, sends ``GET /`` and reads the reply. Asserts the reply is ``200 OK``, the
handler saw an AF_UNIX connection whose peer address is empty (unnamed client
socket), 'DONE' reaches the primary's worker 'message' handler, and the worker's
``sys.exit(0)`` gives 'exit' ``(0, None)``. Run under both policies.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import http.server
import os
import socket
import socketserver
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report

PATH = os.path.abspath("http.sock")

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("message", must_call(lambda m: report(primary_got=m), 1, "message"))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1, "exit"))
    cluster.run()
else:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            report(peer=self.client_address or None, unix=self.connection.family == socket.AF_UNIX)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = socketserver.UnixStreamServer(PATH, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(PATH)
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = client.recv(4096)
            if not chunk:
                break
            data += chunk
    report(response=data.decode("latin-1"))
    cluster.worker.send("DONE")
    sys.exit(0)
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_http_pipe(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    response = result.report("response")
    assert response.startswith("HTTP/1.0 200"), response
    assert response.endswith("\r\n\r\nOK")
    assert result.report("unix") is True
    assert result.report("peer") is None
    assert result.report("primary_got") == "DONE"
    assert result.report("exit") == [0, None]
