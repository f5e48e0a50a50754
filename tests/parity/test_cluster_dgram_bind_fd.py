"""Port of Node's test/parallel/test-cluster-dgram-bind-fd.js.

Node: the primary creates and binds a raw UDP handle on localhost and sends its
*fd number* (a plain integer) to four workers; each worker does
``socket.bind({fd})``. Because a worker's fd-bind is resolved in the
*primary* (NODE_PARITY rule 9), all four share the primary's socket: after
four 'listening' events the primary sends 40 datagrams and every worker gets
exactly 10, reports it, closes its socket and is disconnected by the primary.

Python translation, with pycluster's one deviation from rule 9 (a worker is
untrusted, issue 12): fd N is the *worker's own* descriptor, sent to the
primary with the request, never a number the primary looks up in its own
table. So the primary binds a UDP socket on 127.0.0.1 and sends it to each
worker as a message handle; workers 1-2 call ``pycluster.listen(fd=N)`` and
workers 3-4 ``pycluster.listen("fd://N")`` with N the received socket's
number. The four share one handle (the same socket). Asserts every
'listening' address is that socket (``address 127.0.0.1``, its port,
``address_type 'udp4'``, ``fd`` the worker's N), each worker reads
exactly 10 of the 40 datagrams, and each exits ``(0, None)`` after the
primary's ``worker.disconnect()``.
"""

from __future__ import annotations

SCRIPT = r"""
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

WORKERS = 4
PER_WORKER = 10

if cluster.is_primary:
    deadline(20)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    fd = raw.fileno()
    report(primary_fd=fd, primary_port=raw.getsockname()[1])
    addresses = []
    received = {}

    def sender(address):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(WORKERS * PER_WORKER):
                sock.sendto(b"hello world", address)

    def on_listening(worker, address):
        addresses.append(address.to_dict())
        if len(addresses) == WORKERS:
            report(addresses=addresses)
            threading.Thread(target=sender, args=((address.address, address.port),), daemon=True).start()

    def setup(worker):
        def on_message(message):
            received[worker.id] = message["received"]
            worker.disconnect()

        worker.send({"fd": fd}, raw)
        worker.on("message", must_call(on_message, 1, f"message {worker.id}"))
        worker.on("exit", must_call(lambda code, signal: report(**{f"worker_{worker.id}": [
            received.get(worker.id), code, signal]}), 1, f"exit {worker.id}"))

    for _ in range(WORKERS):
        setup(cluster.fork())
    cluster.on("listening", must_call(on_listening, WORKERS, "listening"))
    cluster.run()
    raw.close()
else:
    def on_message(message, handle):
        threading.Thread(target=serve, args=(handle,), daemon=True).start()

    def serve(handle):  # the received socket is kept open: fd N is its number
        fd = handle.fileno()
        report(**{f"fd_{cluster.worker.id}": fd})
        if cluster.worker.id <= 2:
            sock = cluster.listen(fd=fd)
        else:
            sock = cluster.listen(f"fd://{fd}")
        report(**{f"type_{cluster.worker.id}": [sock.family == socket.AF_INET, sock.type == socket.SOCK_DGRAM]})
        sock.settimeout(10)
        received = 0
        while received < PER_WORKER:
            sock.recvfrom(64)
            received += 1
        cluster.worker.send({"received": received})
        sock.close()

    cluster.worker.on("message", on_message)
"""


def test_cluster_dgram_bind_fd(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    port = result.report("primary_port")
    expected = {"address": "127.0.0.1", "port": port, "address_type": "udp4"}
    addresses = result.report("addresses")
    assert [{k: a[k] for k in expected} for a in addresses] == [expected] * 4
    fds = {result.report(f"fd_{i}") for i in range(1, 5)}
    assert {a["fd"] for a in addresses} <= fds
    for worker_id in range(1, 5):
        assert result.report(f"type_{worker_id}") == [True, True]
        assert result.report(f"worker_{worker_id}") == [10, 0, None]
