"""Port of Node's test-net-listen-handle-in-cluster-2.js.

Node: the worker makes a raw TCP handle, binds it itself and calls
``server.listen(handle)``: the listen goes straight to the handle, without
asking the primary, and 'listening' fires.

Python translation: the worker's socket is bound without going through the
cluster - with the C-level ``_socket.socket`` (the raw handle; pycluster
only intercepts ``socket.socket.bind``), and with a plain socket bound
inside ``with cluster.exclusive():`` - then ``listen()`` is called on it
outside any bypass. That listen uses the socket as is: it is not shared
(``pycluster.child.intercept.listen_requests == 0``, no 'listening' in the primary), it
keeps its own port, and it accepts a connection. The worker disconnects and
exits (0, None).
"""

from __future__ import annotations

import pytest

SCRIPT = """
import socket
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("message", must_call(lambda message: report(worker_saw=message), 1))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    cluster.on("listening", lambda w, address: report(unexpected_listening=address.to_dict()))
    report(primary_rc=cluster.run())
else:
    import _socket
    from pycluster.child import intercept as net

    if HOW == "raw":
        raw = _socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind(("127.0.0.1", 0))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=raw.detach())
    else:
        sock = socket.socket()
        with cluster.exclusive():
            sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.listen()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    conn, _ = sock.accept()
    cluster.worker.send({"port_kept": sock.getsockname()[1] == port, "accepted": conn.getsockname()[1] == port,
                         "listen_requests": net.listen_requests})
    cluster.worker.disconnect()
"""


@pytest.mark.parametrize("how", ["raw", "exclusive"])
def test_listen_on_own_bound_socket_is_not_shared(run_script, how):
    res = run_script(f"HOW = {how!r}\n" + SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("worker_saw") == {"port_kept": True, "accepted": True, "listen_requests": 0}
    assert res.all("unexpected_listening") == []
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
