"""Port of Node's test/parallel/test-cluster-shared-handle-bind-privileged-port.js.

Node (SCHED_NONE): skipped when running as root or when port 42 is not
privileged (``/proc/sys/net/ipv4/ip_unprivileged_port_start <= 42``). The worker
listens on port 42; asserts 'error' with code EACCES, no 'listening', and the
worker disconnects (raw ``process.disconnect()``) and exits with code 0.

Python translation: the same skip conditions (checked with ``pytest.skip``;
this suite usually runs as root, where the test is skipped). The worker's
``socket.create_server(("", 42))`` must raise ``OSError`` with
``errno.EACCES`` (the primary's failed bind, relayed with its errno), no
'listening' event reaches the primary, and after the raw channel close
(``cluster.worker._channel.close_threadsafe()``) the worker exits ``(0, None)``.
"""

from __future__ import annotations

POLICY = "none"

# The same scenario as the RR port, under SCHED_NONE.
from test_cluster_bind_privileged_port import SCRIPT, skip_unless_port_42_is_privileged  # noqa: E402


def test_cluster_shared_handle_bind_privileged_port(run_script):
    skip_unless_port_42_is_privileged()
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": POLICY}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("worker_error") == "EACCES"
    assert result.report("exit") == [0, None]
