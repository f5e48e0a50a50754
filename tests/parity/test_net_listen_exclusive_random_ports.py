"""Port of Node's test-net-listen-exclusive-random-ports.js.

Python translation: two workers each open two exclusive listeners on port 0:
one with a plain ``socket.bind(("127.0.0.1", 0))`` inside
``with cluster.exclusive():`` and one with
``cluster.listen("127.0.0.1:0", exclusive=True)``. Exclusive binds are local
to the worker, so all four listeners get different ports, every one of them
accepts a connection, no query reaches the primary
(``pycluster.child.intercept.listen_requests == 0``) and no 'listening' is reported.
"""

from __future__ import annotations

SCRIPT = """
import socket
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    ports = {}

    def on_message(worker, message):
        ports[worker.id] = message
        if len(ports) == 2:
            report(ports=ports)
            cluster.disconnect()

    cluster.on("message", must_call(on_message, 2))
    cluster.on("listening", lambda worker, address: report(unexpected_listening=address.to_dict()))
    cluster.on("exit", must_call(lambda worker, code, signal: report(exit=[worker.id, code, signal]), 2))
    cluster.fork()
    cluster.fork()
    report(primary_rc=cluster.run())
else:
    from pycluster.child import intercept as net

    with cluster.exclusive():
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
    a.listen()
    b = cluster.listen("127.0.0.1:0", exclusive=True)
    usable = []
    for server in (a, b):
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        server.settimeout(5)
        conn, _ = server.accept()
        usable.append(conn.getsockname()[1] == port)
        conn.close()
        client.close()
    cluster.worker.send({"ports": [a.getsockname()[1], b.getsockname()[1]], "usable": usable,
                         "listen_requests": net.listen_requests})
"""


def test_exclusive_port_zero_listeners_get_distinct_ports(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    by_worker = res.report("ports")
    assert sorted(by_worker) == ["1", "2"]
    all_ports = [p for info in by_worker.values() for p in info["ports"]]
    assert all(p > 0 for p in all_ports)
    assert len(set(all_ports)) == 4, by_worker
    for info in by_worker.values():
        assert info["usable"] == [True, True]
        assert info["listen_requests"] == 0
    assert res.all("unexpected_listening") == []
    assert sorted(res.all("exit")) == [[1, 0, None], [2, 0, None]]
    assert res.report("primary_rc") == 0
