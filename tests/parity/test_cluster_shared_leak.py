"""Port of Node's test/parallel/test-cluster-shared-leak.js.

Node (SCHED_NONE): worker 1 listens on port 0; once it is listening worker 2 is
forked (and listens too, sharing the port); on worker 2's 'online' the primary
connects to the shared port and, once connected, disconnects both workers. The
server answers 'bye' (ECONNRESET tolerated). Asserts cluster 'exit' fires twice,
each time with worker 1 or worker 2 and ``(0, null)``; at the last exit
``cluster.workers`` is empty.

Python translation: the same with ``socketserver.TCPServer(("", 0))`` in the
workers and the client in a primary thread (it hands "connected" back to the
loop, which disconnects both workers). Asserts the two 'exit' events carry the
two Worker objects with ``(0, None)``, ``cluster.workers`` is empty at the second
one, and (NODE_PARITY: no leak) the primary's copy of the shared socket is
closed once both workers are gone: the primary itself can listen on the port.
"""

from __future__ import annotations

SCRIPT = r"""
import socket
import socketserver
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    cluster.scheduling_policy = cluster.SCHED_NONE
    deadline(20)
    worker1 = cluster.fork()
    state = {"exits": []}

    def client(port):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        cluster._engine.loop.call_soon_threadsafe(connected)
        try:
            report(client_got=conn.recv(16).decode())
        except ConnectionResetError:
            report(client_got="ECONNRESET")
        finally:
            conn.close()

    def connected():
        worker1.disconnect()
        state["worker2"].disconnect()

    def on_listening1(address):
        state["port"] = address.port
        worker2 = state["worker2"] = cluster.fork()
        worker2.on("online", must_call(
            lambda: threading.Thread(target=client, args=(address.port,), daemon=True).start(),
            1, "worker2 online"))

    def on_exit(worker, code, signal):
        state["exits"].append([worker.id, worker is worker1 or worker is state.get("worker2"),
                               code, signal])
        if len(state["exits"]) < 2:
            return
        report(exits=state["exits"], workers_left=len(cluster.workers))
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", state["port"]))
            probe.listen()
            report(port_free=True)
        except OSError as exc:
            report(port_free=exc.errno)
        finally:
            probe.close()

    worker1.on("listening", must_call(on_listening1, 1, "worker1 listening"))
    cluster.on("exit", must_call(on_exit, 2, "exit"))
    cluster.run()
else:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                self.request.sendall(b"bye")
            except ConnectionResetError:
                pass

    socketserver.TCPServer(("", 0), Handler).serve_forever()
"""


def test_cluster_shared_leak(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    exits = result.report("exits")
    assert sorted(e[0] for e in exits) == [1, 2]
    assert all(e[1:] == [True, 0, None] for e in exits), exits
    assert result.report("workers_left") == 0
    assert result.report("port_free") is True, "the primary still holds the shared socket"
    assert result.report("client_got") in ("bye", "", "ECONNRESET")
