"""Port of Node's test-listen-fd-cluster.js.

Python translation: the test creates a listening TCP socket on
127.0.0.1:0 and hands it to the primary with ``pass_fds`` (its number N is
passed as an argument; the primary itself never touches it). The primary
forks one worker, which calls ``cluster.listen(fd=N)`` (or
``cluster.listen("fd://N")``): fd N means the descriptor *in the primary*
(NODE_PARITY 0.1 rule 9), not the worker's own fd N. The worker serves
HTTP on it with http.server. On 'listening' (whose address has fd == N and
the socket's port) the primary sends a GET from a thread: the response is
200 'hello from worker\\n', so the worker serves on a socket only the
primary had. Then the worker is disconnected and exits (0, None).
"""

from __future__ import annotations

import socket

import pytest

SCRIPT = """
import http.server
import os
import sys
import threading
import urllib.request
import pycluster as cluster
from harness import deadline, must_call, report

FD = int(sys.argv[1])
PORT = int(sys.argv[2])
FORM = sys.argv[3]

if cluster.is_primary:
    import socket
    deadline(20)
    worker = cluster.fork()
    worker.send("listener", socket.socket(fileno=FD))

    def get(worker):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as resp:
                report(response=[resp.status, resp.read().decode()])
        except Exception as exc:
            report(response=repr(exc))
        cluster._engine.loop.call_soon_threadsafe(worker.disconnect)

    def on_listening(address):
        report(address=address.to_dict())
        threading.Thread(target=get, args=(worker,), daemon=True).start()

    worker.on("listening", must_call(on_listening, 1))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    report(primary_rc=cluster.run())
else:
    import queue
    received = queue.Queue()
    cluster.worker.on("message", lambda message, handle: received.put(handle))
    handle = received.get(timeout=10)  # kept: closing it would close fd N
    mine = handle.fileno()
    report(worker_fd=mine)
    sock = cluster.listen(fd=mine) if FORM == "keyword" else cluster.listen(f"fd://{mine}")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from worker\\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hello, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever()
"""


@pytest.mark.parametrize("form", ["keyword", "url"])
def test_worker_listens_on_a_primary_fd(run_script, form):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    try:
        res = run_script(SCRIPT, timeout=30, args=(fd, port, form), pass_fds=(fd,))
    finally:
        listener.close()
    assert res.returncode == 0, res.stderr
    assert res.report("response") == [200, "hello from worker\n"]
    mine = res.report("worker_fd")
    assert res.report("address") == {"address": "127.0.0.1", "port": port, "address_type": 4, "fd": mine}
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
