"""Port of Node's test/parallel/test-cluster-dgram-1.js.

Node: four workers each bind a udp4 socket to the same port (one shared
socket, so every 'listening' port is equal). After four cluster 'listening'
events the primary sends 40 datagrams to the address of the last one. Each
worker stops after exactly 10 datagrams (the rest flow to the others through
the one shared socket), reports ``{received: 10}`` and disconnects; the primary
checks ``received == 10`` per worker.

Python translation: each worker ``bind(("", 0))``s a UDP socket (every
worker's first port-0 bind shares one socket through the primary), reads
exactly 10 datagrams, closes its socket, sends ``{"received": 10}`` and calls
``cluster.worker.disconnect()``. The primary's sender runs in a thread.
Asserts the four 'listening' addresses are equal (``address_type 'udp4'``,
same port), every worker received exactly 10 at its 'disconnect', and every
worker exits ``(0, None)``. UDP is shared whatever the policy, so the test
runs under both policies.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

WORKERS = 4
PER_WORKER = 10

if cluster.is_primary:
    deadline(20)
    for _ in range(WORKERS):
        cluster.fork()
    addresses = []
    received = {}

    def sender(port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(WORKERS * PER_WORKER):
                sock.sendto(b"hello world %d" % i, ("127.0.0.1", port))

    def on_listening(worker, address):
        addresses.append(address.to_dict())
        if len(addresses) == WORKERS:
            report(addresses=addresses)
            threading.Thread(target=sender, args=(address.port,), daemon=True).start()

    def setup(worker):
        worker.on("message", must_call(lambda m: received.__setitem__(worker.id, m["received"]),
                                       1, f"message {worker.id}"))
        worker.on("disconnect", must_call(lambda: report(**{f"received_{worker.id}": received.get(worker.id)}),
                                          1, f"disconnect {worker.id}"))
        worker.on("exit", must_call(lambda code, signal: report(**{f"exit_{worker.id}": [code, signal]}),
                                    1, f"exit {worker.id}"))

    for worker in list(cluster.workers.values()):
        setup(worker)
    cluster.on("listening", must_call(on_listening, WORKERS, "listening"))
    cluster.run()
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", 0))
    sock.settimeout(10)
    received = 0
    while received < PER_WORKER:
        sock.recvfrom(64)
        received += 1
    sock.close()
    cluster.worker.send({"received": received})
    cluster.worker.disconnect()
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_dgram_1(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    addresses = result.report("addresses")
    assert len(addresses) == 4
    assert all(a == addresses[0] for a in addresses), addresses
    assert addresses[0]["address_type"] == "udp4"
    assert addresses[0]["port"] > 0
    for worker_id in range(1, 5):
        assert result.report(f"received_{worker_id}") == 10
        assert result.report(f"exit_{worker_id}") == [0, None]
