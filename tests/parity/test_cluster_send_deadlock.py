"""Port of Node's test/parallel/test-cluster-send-deadlock.js.

Node: the primary runs its own TCP server and sends every accepted socket to the
worker (``worker.send('handle', socket)``); the worker opens two clients to that
server, sends every handle it receives straight back (``process.send('reply',
handle)``), ends both clients and disconnects once they close. Asserts the
worker exits ``(0, null)``: handles flowing both ways at once do not deadlock.

Python translation: the primary's server is a plain (non-cluster) socket served
by an accept thread that hands each connection to the loop, which sends it to
the worker and closes its own copy (Node's ``keepOpen: false``). The worker's
clients run in a thread; the worker's message handler sends every received
socket back and closes its copy; the primary closes what comes back, so each
client sees EOF once every copy is closed, and the worker then disconnects.
Parametrized: Node's 2 clients, and 40 clients whose messages carry 64 KiB of
padding each, so frames with fds flow in both directions at the same time.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import os
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

CLIENTS = int(os.environ["CLIENTS"])
PAD = "x" * int(os.environ["PAD"])

if cluster.is_primary:
    deadline(25)
    worker = cluster.fork()
    server = socket.create_server(("127.0.0.1", 0))
    replies = []

    def forward(conn):
        worker.send({"message": "handle", "pad": PAD}, conn)
        conn.close()

    def acceptor():
        for _ in range(CLIENTS):
            conn, _ = server.accept()
            cluster._engine.loop.call_soon_threadsafe(forward, conn)

    def on_online():
        threading.Thread(target=acceptor, daemon=True).start()
        worker.send({"message": "listen", "port": server.getsockname()[1]})

    def on_message(message, handle):
        replies.append([message.get("message"), isinstance(handle, socket.socket),
                        len(message.get("pad", ""))])
        if handle is not None:
            handle.close()

    def on_exit(code, signal):
        report(exit=[code, signal], replies=replies)
        server.close()

    worker.on("online", must_call(on_online, 1, "online"))
    worker.on("message", must_call(on_message, CLIENTS, "reply"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    def clients(port):
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CLIENTS)]
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        for s in socks:
            while s.recv(4096):
                pass
            s.close()
        cluster.worker.disconnect()

    def on_message(message, handle):
        if message["message"] == "listen":
            threading.Thread(target=clients, args=(message["port"],), daemon=True).start()
        else:
            cluster.worker.send({"message": "reply", "pad": message["pad"]}, handle)
            handle.close()

    cluster.worker.on("message", on_message)
"""


@pytest.mark.parametrize("clients,pad", [(2, 0), (40, 64 * 1024)], ids=["node", "stress"])
def test_cluster_send_deadlock(run_script, clients, pad):
    result = run_script(SCRIPT, env={"CLIENTS": clients, "PAD": pad}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("exit") == [0, None]
    assert result.report("replies") == [["reply", True, pad]] * clients
