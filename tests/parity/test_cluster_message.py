"""Port of Node's test/parallel/test-cluster-message.js.

Node: the worker listens on port 0; when the primary connects, the worker sends
'message from worker' over IPC; the primary answers 'message from primary' and
the worker echoes that back over the TCP connection. Then the primary kills the
worker and waits for 'exit'.

Python translation: the worker's ``socket.create_server(("", 0))`` is shared
through the primary; a client thread in the primary connects to the port of the
'listening' event. The test asserts the worker-level 'message' handler and the
cluster-level 'message' handler (signature ``(worker, message, handle)``, same
Worker object, handle None) each ran once with the worker's message, that the
primary's reply reached the worker (echoed back over TCP), and that
``worker.kill()`` ends the worker with 'exit' ``(0, None)`` (SPEC semantics:
kill disconnects first, so ``exited_after_disconnect`` is True).
"""

from __future__ import annotations

SCRIPT = r"""
import json
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    loop_call = lambda fn, *a: cluster._engine.loop.call_soon_threadsafe(fn, *a)

    def client(port):
        data = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        loop_call(got_echo, data.decode())

    def got_echo(text):
        report(echo=json.loads(text))
        worker.kill()

    def on_listening(w, address):
        report(listening_port=address.port)
        threading.Thread(target=client, args=(address.port,), daemon=True).start()

    def on_worker_message(message, handle):
        report(worker_message=message, worker_handle_is_none=handle is None)

    def on_cluster_message(w, message, handle):
        report(cluster_message=message, same_worker=w is worker, cluster_handle_is_none=handle is None)
        w.send("message from primary")

    def on_exit(w, code, signal):
        report(exit=[code, signal], exited_after_disconnect=w.exited_after_disconnect)

    cluster.on("listening", must_call(on_listening, 1, "listening"))
    worker.on("message", must_call(on_worker_message, 1, "worker message"))
    cluster.on("message", must_call(on_cluster_message, 1, "cluster message"))
    cluster.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    server = socket.create_server(("", 0))
    conn, _ = server.accept()

    def on_message(message, handle):
        conn.sendall((json.dumps({"echo": message}) + "\n").encode())

    cluster.worker.on("message", on_message)
    cluster.worker.send("message from worker")
"""


def test_cluster_message(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("listening_port") > 0
    assert result.report("worker_message") == "message from worker"
    assert result.report("worker_handle_is_none") is True
    assert result.report("cluster_message") == "message from worker"
    assert result.report("same_worker") is True
    assert result.report("cluster_handle_is_none") is True
    assert result.report("echo") == {"echo": "message from primary"}
    assert result.report("exit") == [0, None]
    assert result.report("exited_after_disconnect") is True
