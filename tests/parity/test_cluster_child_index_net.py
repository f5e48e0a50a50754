"""Port of Node's test/parallel/test-cluster-child-index-net.js.

Node: inside one worker, two servers ``listen(0)`` at the same time (per-worker
handle indexes 0 and 1); each closes in its listening callback and a fresh
server then ``listen(0)``s again and closes. All four listens must succeed (an
index is freed on close and reused) and the worker exits 0.

Python translation: the worker opens two port-0 TCP listeners at once (they must
get two different ports: indexes 0 and 1), closes each and opens a fresh port-0
listener in its place, and repeats that for several cycles to show that
open/close of port-0 listeners neither leaks nor collides. Every listen must
succeed and reach the primary as a 'listening' event. The worker then
``sys.exit(0)`` (Node's ``process.exit(0)``); at its 'exit' ``(0, None)`` the
primary can bind every port the worker used: the primary released each shared
listener when its last user closed it. Run under both policies.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import os
import socket
import sys

import pycluster as cluster
from harness import deadline, must_call, report

KIND = os.environ["KIND"]
CYCLES = 5
STYPE = socket.SOCK_STREAM if KIND == "tcp" else socket.SOCK_DGRAM

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    ports = []

    def on_message(message):
        ports.extend(message["ports"])

    def on_exit(code, signal):
        rebound = []
        for port in sorted(set(ports)):
            probe = socket.socket(socket.AF_INET, STYPE)
            try:
                probe.bind(("0.0.0.0", port))
                rebound.append(True)
            except OSError as exc:
                rebound.append([port, exc.errno])
            finally:
                probe.close()
        report(exit=[code, signal], rebound=rebound)

    cluster.on("listening", must_call(None, CYCLES * 4, "listening"))
    worker.on("message", must_call(on_message, 1, "message"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    def listen0():
        sock = socket.socket(socket.AF_INET, STYPE)
        sock.bind(("", 0))
        if STYPE == socket.SOCK_STREAM:
            sock.listen()
        return sock

    used = []
    pairs = []
    for _ in range(CYCLES):
        first, second = listen0(), listen0()
        pair = [first.getsockname()[1], second.getsockname()[1]]
        pairs.append(pair)
        used.extend(pair)
        for sock in (first, second):
            sock.close()
            fresh = listen0()
            used.append(fresh.getsockname()[1])
            fresh.close()
    report(pairs=pairs, used=len(used))
    cluster.worker.send({"ports": used})
    sys.exit(0)
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_child_index_net(run_script, policy):
    result = run_script(SCRIPT, env={"KIND": "tcp", "PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("used") == 20
    for first, second in result.report("pairs"):
        assert first > 0 and second > 0
        assert first != second, "two concurrent listen(0) in one worker must not share a port"
    assert result.report("exit") == [0, None]
    assert all(ok is True for ok in result.report("rebound")), result.report("rebound")
