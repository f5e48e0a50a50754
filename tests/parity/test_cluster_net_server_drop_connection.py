"""Port of Node's test/parallel/test-cluster-net-server-drop-connection.js.

Node: SCHED_RR over a unix socket path; three workers with ``maxConnections``
0, 1 and 9; ten client connections. A connection a worker declines (its cap is
reached) is handed to another worker, never dropped: the workers report
exactly 0, 1 and 9 connections. Then every worker disconnects.

Python translation (pycluster has no per-server connection cap, see
NODE_PARITY.md section J): the simpler RR scenario. Three workers serve the
same address with ``socketserver`` (a unix socket path as in Node, and TCP);
the primary's client thread opens ten connections at once and then reads each.
Asserts every connection is served (each gets the id of the worker that served
it), the counts add up to ten and every worker served at least one (RR spreads
the load when connections >= workers), and ``cluster.disconnect()`` ends every
worker with ``(0, None)``.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import collections
import os
import socket
import socketserver
import threading

import pycluster as cluster
from harness import deadline, must_call, report

KIND = os.environ["KIND"]
WORKERS = 3
CONNECTIONS = 10
PATH = os.path.abspath("drop-connection.sock")

if cluster.is_primary:
    cluster.scheduling_policy = cluster.SCHED_RR
    deadline(20)
    for _ in range(WORKERS):
        cluster.fork()
    listening = []

    def clients(address):
        family = socket.AF_UNIX if KIND == "unix" else socket.AF_INET
        conns = []
        for _ in range(CONNECTIONS):
            conn = socket.socket(family, socket.SOCK_STREAM)
            conn.settimeout(10)
            conn.connect(address)
            conns.append(conn)
        served = []
        for conn in conns:
            try:
                data = b""
                while True:
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    data += chunk
                served.append(data.decode() or None)
            except OSError as exc:
                served.append(f"error {exc!r}")
            finally:
                conn.close()
        cluster._engine.loop.call_soon_threadsafe(done, served)

    def done(served):
        report(served=served, per_worker=dict(collections.Counter(served)))
        cluster.disconnect(must_call(None, 1, "disconnect callback"))

    def on_listening(worker, address):
        listening.append(address)
        if len(listening) == WORKERS:
            target = PATH if KIND == "unix" else ("127.0.0.1", address.port)
            threading.Thread(target=clients, args=(target,), daemon=True).start()

    cluster.on("listening", must_call(on_listening, WORKERS, "listening"))
    cluster.on("exit", must_call(lambda w, code, signal: report(exit=[code, signal]), WORKERS, "exit"))
    cluster.run()
else:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(str(cluster.worker.id).encode())

    if KIND == "unix":
        server = socketserver.UnixStreamServer(PATH, Handler)
    else:
        server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    server.serve_forever()
"""


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_cluster_net_server_drop_connection(run_script, kind):
    result = run_script(SCRIPT, env={"KIND": kind}, timeout=30)
    assert result.returncode == 0, result.stderr
    served = result.report("served")
    assert len(served) == 10
    assert all(s in ("1", "2", "3") for s in served), served
    per_worker = result.report("per_worker")
    assert sum(per_worker.values()) == 10
    assert sorted(per_worker) == ["1", "2", "3"], per_worker
    assert all(count >= 1 for count in per_worker.values()), per_worker
    assert result.all("exit") == [[0, None]] * 3
