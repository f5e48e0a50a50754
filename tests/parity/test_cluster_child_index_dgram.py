"""Port of Node's test/parallel/test-cluster-child-index-dgram.js.

Node: inside one worker, two udp4 sockets ``bind(0)`` at the same time
(per-worker handle indexes 0 and 1); each closes after binding and a fresh
socket then ``bind(0)``s again and closes. All four binds must succeed (an
index is freed on close and reused) and the worker exits 0.

Python translation: the worker binds two port-0 UDP sockets at once (they must
get two different ports: indexes 0 and 1), closes each and binds a fresh port-0
socket in its place, and repeats that for several cycles to show that
open/close of port-0 sockets neither leaks nor collides. Every bind must reach
the primary as a 'listening' event. The worker then ``sys.exit(0)`` (Node's
``process.exit(0)``); at its 'exit' ``(0, None)`` the primary can bind every
port the worker used: it released each shared socket when its last user
closed it. UDP is always a shared socket; the test runs under both policies
(the policy must not matter for UDP).
"""

from __future__ import annotations

import pytest
from test_cluster_child_index_net import SCRIPT  # one script for both: KIND picks tcp or udp


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_child_index_dgram(run_script, policy):
    result = run_script(SCRIPT, env={"KIND": "udp", "PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("used") == 20
    for first, second in result.report("pairs"):
        assert first > 0 and second > 0
        assert first != second, "two concurrent UDP bind(0) in one worker must not share a port"
    assert result.report("exit") == [0, None]
    assert all(ok is True for ok in result.report("rebound")), result.report("rebound")
