"""Port of Node's test-cluster-net-reuseport.js.

Python translation: in the worker the app creates two TCP sockets and sets
SO_REUSEPORT on each before binding (Node's ``reusePort: true``): the first
binds 127.0.0.1:0, the second binds the port the first one got. pycluster
must leave both alone: no query goes to the primary
(``pycluster.child.intercept.listen_requests == 0`` in the worker), no 'listening'
reaches the primary, both listeners accept, and the worker disconnects and
exits (0, None).
"""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")

SCRIPT = """
import socket
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.fork()

    def on_listening(worker, address):
        report(unexpected_listening=address.to_dict())

    cluster.on("listening", on_listening)

    def on_exit(worker, code, signal):
        report(exit=[code, signal])

    cluster.on("exit", must_call(on_exit, 1))
    report(primary_rc=cluster.run())
else:
    from pycluster.child import intercept as net

    def reuseport_server(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock

    first = reuseport_server(0)
    port = first.getsockname()[1]
    second = reuseport_server(port)
    # Both really listen: connect to the port until each socket got one.
    seen = set()
    clients = []
    for _ in range(200):
        if len(seen) == 2:
            break
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for sock in (first, second):
            sock.setblocking(False)
            try:
                conn, _ = sock.accept()
                conn.close()
                seen.add(sock.fileno())
            except BlockingIOError:
                pass
    report(worker_port=port, second_port=second.getsockname()[1], accepted_on=len(seen),
           listen_requests=net.listen_requests)
    cluster.worker.disconnect()
"""


def test_reuseport_servers_bypass_the_primary(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.report("listen_requests") == 0
    port = res.report("worker_port")
    assert port > 0 and res.report("second_port") == port
    assert res.report("accepted_on") == 2
    assert res.all("unexpected_listening") == []
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
