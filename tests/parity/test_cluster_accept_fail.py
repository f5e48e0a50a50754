"""Port of Node's test/parallel/test-cluster-accept-fail.js.

Node (SCHED_RR, ``--expose-internals``): the primary's
``RoundRobinHandle.prototype.distribute`` is patched so the first accepted
handle is closed and distribution goes on with an error. Asserts the worker's
connection listener is never called, the client socket gets 'close', the worker
closes its server and disconnects, and nothing crashes.

Python translation: the primary script monkeypatches ``socket.socket._accept``
(what pycluster's RR handle calls to accept) so that the first accept takes the
connection, closes it, and raises ``OSError`` with a given errno: a client that
gave up (ECONNABORTED), out of descriptors (EMFILE) or an unexpected error
(EINVAL). The primary's client thread must see the first connection closed
without data and the worker's handler must not run for it; the primary must
keep serving: a second connection is handed to the worker and answered. Then
``cluster.disconnect()`` ends the worker with ``(0, None)`` and the primary
exits 0.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import errno
import os
import socket
import socketserver
import threading

import pycluster as cluster
from harness import deadline, must_call, report

FAULT = getattr(errno, os.environ["FAULT"])

if cluster.is_primary:
    deadline(20)
    cluster.scheduling_policy = cluster.SCHED_RR
    real_accept = socket.socket._accept
    injected = []

    def failing_accept(self):
        fd, addr = real_accept(self)
        if not injected:
            injected.append(addr)
            os.close(fd)
            raise OSError(FAULT, os.strerror(FAULT))
        return fd, addr

    socket.socket._accept = failing_accept
    worker = cluster.fork()

    def read_all(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            data = b""
            try:
                while True:
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                return "reset"
            return data.decode()

    def clients(port):
        first = read_all(port)
        second = read_all(port)
        cluster._engine.loop.call_soon_threadsafe(done, first, second)

    def done(first, second):
        report(first=first, second=second, injected=len(injected))
        cluster.disconnect()

    def on_listening(address):
        threading.Thread(target=clients, args=(address.port,), daemon=True).start()

    worker.on("listening", must_call(on_listening, 1, "listening"))
    worker.on("message", must_call(lambda m: report(worker_connection=m), 1, "connection message"))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1, "exit"))
    cluster.run()
    report(primary_done=True)
else:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            cluster.worker.send("connection")
            self.request.sendall(b"served")

    socketserver.TCPServer(("127.0.0.1", 0), Handler).serve_forever()
"""


@pytest.mark.parametrize("fault", ["ECONNABORTED", "EMFILE", "EINVAL"])
def test_cluster_accept_fail(run_script, fault):
    result = run_script(SCRIPT, env={"FAULT": fault}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("injected") == 1
    assert result.report("first") in ("", "reset"), "the failed connection must be closed, not served"
    assert result.report("second") == "served", "the primary stopped serving after an accept error"
    assert result.report("worker_connection") == "connection"
    assert result.report("exit") == [0, None]
    assert result.report("primary_done") is True
