"""Port of Node's test/parallel/test-cluster-dgram-2.js.

Node: the primary binds its own UDP socket and forks four workers; each worker
explicitly ``bind(0)``s a udp4 socket (so it is clustered; an implicit bind by
``send()`` would not be) and sends 10 datagrams to the primary's socket.
Asserts the primary receives 40 datagrams; it then closes its socket and
``cluster.disconnect()`` ends everything.

Python translation: the primary's own UDP socket (binds in the primary are never
intercepted) is read by a thread; each worker's ``bind(("", 0))`` goes through
the primary (one shared socket) and then sends 10 datagrams with ``sendto``.
Asserts 40 datagrams arrive, all from the single source port of the shared
socket (the port in every worker's 'listening' event), and
``cluster.disconnect(callback)`` closes the workers' shared sockets: every
worker exits ``(0, None)`` and the callback runs once. Run under both policies
(UDP is always shared).
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import os
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

WORKERS = 4
PER_WORKER = 10

if cluster.is_primary:
    deadline(20)
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.settimeout(10)
    listening_ports = []

    def receiver():
        sources = []
        try:
            while len(sources) < WORKERS * PER_WORKER:
                data, (host, port) = target.recvfrom(64)
                sources.append(port)
        except OSError as exc:
            report(receive_error=repr(exc))
        cluster._engine.loop.call_soon_threadsafe(done, sources)

    def done(sources):
        target.close()
        report(datagrams=len(sources), source_ports=sorted(set(sources)),
               listening_ports=sorted(set(listening_ports)))
        cluster.disconnect(must_call(lambda: report(disconnected=True), 1, "disconnect callback"))

    threading.Thread(target=receiver, daemon=True).start()
    for _ in range(WORKERS):
        cluster.fork({"PORT": target.getsockname()[1]})
    cluster.on("listening", must_call(lambda w, a: listening_ports.append(a.port), WORKERS, "listening"))
    cluster.on("exit", must_call(lambda w, code, signal: report(exit=[code, signal]), WORKERS, "exit"))
    cluster.run()
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", 0))
    for i in range(PER_WORKER):
        sock.sendto(b"hello world", ("127.0.0.1", int(os.environ["PORT"])))
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_dgram_2(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("datagrams") == 40
    listening = result.report("listening_ports")
    assert len(listening) == 1, "all workers' bind(0) must share one socket"
    assert result.report("source_ports") == listening
    assert result.report("disconnected") is True
    assert result.all("exit") == [[0, None]] * 4
