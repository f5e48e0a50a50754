"""Port of Node's test/parallel/test-cluster-send-handle-twice.js.

Node: the worker's server gets a connection and sends the *same* socket to the
primary twice in a row; the worker's own client disconnects the worker once its
connection closes. Asserts the worker exits ``(0, null)``.

Python translation and pycluster's documented choice: ``send(msg, handle)``
duplicates the descriptor at call time and the sender keeps its own copy
(Node's ``keepOpen: true``), so sending one socket twice simply works: the
primary receives two socket objects for the one connection (same local and
peer address), in order. The worker closes its copy after sending, the primary
closes both copies, the client then sees EOF and the worker disconnects and
exits ``(0, None)``. Run under both scheduling policies (the connection comes
from an RR hand-off or from the worker's own accept).
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    received = []

    def on_message(message, handle):
        names = None
        if isinstance(handle, socket.socket):
            names = [list(handle.getsockname()), list(handle.getpeername())]
            handle.close()
        received.append([message, names])

    def on_exit(code, signal):
        report(exit=[code, signal], received=received)

    worker.on("message", must_call(on_message, 2, "message"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
        cluster.worker.disconnect()

    threading.Thread(target=client, daemon=True).start()
    conn, _ = server.accept()
    cluster.worker.send("send-handle-1", conn)
    cluster.worker.send("send-handle-2", conn)
    conn.close()
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_send_handle_twice(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("exit") == [0, None]
    (msg1, names1), (msg2, names2) = result.report("received")
    assert [msg1, msg2] == ["send-handle-1", "send-handle-2"]
    assert names1 is not None and names2 is not None, "a handle did not arrive as a socket"
    assert names1 == names2, "both handles must be the same connection"
