"""Port of Node's test/parallel/test-cluster-shared-handle-bind-error.js.

Node (SCHED_NONE): the primary itself listens on a port with a private server
(not shared) and forks a worker that listens on the same port. Asserts the
worker's server emits 'error' with code EADDRINUSE and never 'listening'; the
worker then calls the raw ``process.disconnect()`` and exits with code 0; the
primary stays up and closes its own server at the worker's exit.

Python translation: the primary's private listener is a plain
``socket.create_server`` (binds in the primary are never intercepted); the
worker's ``socket.create_server(("", PORT))`` must raise ``OSError`` with
``errno.EADDRINUSE`` (the error a plain bind raises), no 'listening' event
reaches the primary, the worker's raw channel close
(``cluster.worker._channel.close_threadsafe()``) makes it exit ``(0, None)``, and
the primary's own server is still up afterwards (a client connects to it) before
the primary closes it. NODE_PARITY asks for both policies (RR is also covered
by test_cluster_ipc_throw).
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import errno
import os
import socket

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    server = socket.create_server(("", 0))
    port = server.getsockname()[1]
    worker = cluster.fork({"PORT": port})

    def on_exit(code, signal):
        report(exit=[code, signal])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = server.accept()
            conn.close()
        report(primary_server_alive=True)
        server.close()

    cluster.on("listening", must_call(None, 0, "listening"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    try:
        socket.create_server(("", int(os.environ["PORT"])))
    except OSError as exc:
        report(worker_error=errno.errorcode.get(exc.errno, exc.errno), error_type=type(exc).__name__)
    else:
        report(worker_error=None)
    cluster.worker._channel.close_threadsafe()
"""


@pytest.mark.parametrize("policy", ["none", "rr"])
def test_cluster_shared_handle_bind_error(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("worker_error") == "EADDRINUSE"
    assert result.report("error_type") == "OSError"
    assert result.report("exit") == [0, None]
    assert result.report("primary_server_alive") is True
