"""Port of Node's test/parallel/test-cluster-server-restart-rr.js and
test-cluster-server-restart-none.js (one scenario, parametrized over the policy).

Node: worker 1 listens on port 0. Once it is listening, worker 2 is forked and
listens on 0 (sharing worker 1's port), closes its server, listens on 0 again,
closes, and calls the raw ``process.disconnect()``. Asserts both of worker 2's
listens succeed, worker 2 exits ``(0, null)``, then worker 1 is disconnected
and exits ``(0, null)``.

Python translation: the same sequence with ``socket.create_server(("", 0))``.
Both of worker 2's listens must get worker 1's port (every worker's first
port-0 listener shares one handle, and worker 1 keeps it open throughout).
Worker 2's raw channel close (``cluster.worker._channel.close_threadsafe()``)
makes it exit 0 at once. Extra check: after worker 2 is gone, worker 1 still
serves a connection on the shared port, then ``worker1.disconnect()`` ends it
with ``(0, None)``.
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
    worker1 = cluster.fork()
    state = {}

    def client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            data = conn.recv(16)
        cluster._engine.loop.call_soon_threadsafe(served, data.decode())

    def served(text):
        report(served_after_restart=text)
        worker1.disconnect()

    def on_listening1(address):
        state["port"] = address.port
        report(worker1_port=address.port)
        worker2 = cluster.fork()
        worker2.on("listening", must_call(lambda a: report(worker2_listen=a.port), 2, "worker2 listening"))
        worker2.on("exit", must_call(on_exit2, 1, "worker2 exit"))

    def on_exit2(code, signal):
        report(worker2_exit=[code, signal])
        threading.Thread(target=client, args=(state["port"],), daemon=True).start()

    def on_exit1(code, signal):
        report(worker1_exit=[code, signal])

    worker1.on("listening", must_call(on_listening1, 1, "worker1 listening"))
    worker1.on("exit", must_call(on_exit1, 1, "worker1 exit"))
    cluster.run()
else:
    server = socket.create_server(("", 0))
    if cluster.worker.id == 2:
        ports = [server.getsockname()[1]]
        server.close()
        server = socket.create_server(("", 0))
        ports.append(server.getsockname()[1])
        server.close()
        report(worker2_ports=ports)
        cluster.worker._channel.close_threadsafe()
    else:
        while True:
            conn, _ = server.accept()
            conn.sendall(b"w1")
            conn.close()
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_server_restart(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    port = result.report("worker1_port")
    assert port > 0
    assert result.report("worker2_ports") == [port, port]
    assert result.all("worker2_listen") == [port, port]
    assert result.report("worker2_exit") == [0, None]
    assert result.report("served_after_restart") == "w1"
    assert result.report("worker1_exit") == [0, None]
