"""Port of Node's test-cluster-dgram-reuseport.js.

Python translation: in the worker the app creates two UDP sockets with
SO_REUSEPORT set before bind (Node's ``reusePort: true``); the first binds
127.0.0.1:0, the second the same port. Although UDP is otherwise always
shared through the primary, these binds stay local: no query is sent
(``pycluster.child.intercept.listen_requests == 0``), the primary sees no 'listening',
both sockets receive datagrams, and the worker disconnects and exits (0, None).
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
    cluster.on("listening", lambda worker, address: report(unexpected_listening=address.to_dict()))

    def on_exit(worker, code, signal):
        report(exit=[code, signal])

    cluster.on("exit", must_call(on_exit, 1))
    report(primary_rc=cluster.run())
else:
    from pycluster.child import intercept as net

    def reuseport_socket(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    first = reuseport_socket(0)
    port = first.getsockname()[1]
    second = reuseport_socket(port)
    # The kernel spreads senders over the group by source port: send from
    # fresh sockets until each of the two got a datagram.
    first.setblocking(False)
    second.setblocking(False)
    got = set()
    senders = []
    for _ in range(200):
        if len(got) == 2:
            break
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders.append(sender)
        sender.sendto(b"x", ("127.0.0.1", port))
        for sock in (first, second):
            try:
                sock.recvfrom(16)
                got.add(sock.fileno())
            except BlockingIOError:
                pass
    report(worker_port=port, second_port=second.getsockname()[1], received_on=len(got),
           listen_requests=net.listen_requests)
    cluster.worker.disconnect()
"""


def test_reuseport_udp_sockets_bypass_the_primary(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.report("listen_requests") == 0
    port = res.report("worker_port")
    assert port > 0 and res.report("second_port") == port
    assert res.report("received_on") == 2
    assert res.all("unexpected_listening") == []
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
