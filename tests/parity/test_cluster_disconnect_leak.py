"""Port of Node's test/parallel/test-cluster-disconnect-leak.js (SCHED_NONE).

The worker listens on port 0; the primary calls ``cluster.disconnect()``
right after ``fork()``, before the worker is online, so the disconnect
races the worker's listen handshake. Worker 'disconnect', worker 'exit' and
cluster 'exit' all fire, and the primary leaks no shared handle (Node's
internal "resource leak" assertion).

Python translation: the policy is set with ``cluster.scheduling_policy =
cluster.SCHED_NONE`` before the first fork. The leak check reads the
primary's handle table (``cluster._engine.listeners.handles``) in cluster 'exit',
when the only worker is gone: it must be empty. The worker's bind may fail
if the disconnect wins the race (it is then no longer connected); the
worker reports that and ends normally, so its exit is ``(0, None)`` either
way; an uncaught error would show up as exit code 1.
"""

from __future__ import annotations

SCRIPT = r"""
import socketserver

import pycluster as cluster
from harness import deadline, must_call, report

cluster.scheduling_policy = cluster.SCHED_NONE

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("disconnect", must_call(lambda: None, 1, name="worker disconnect"))
    worker.on("exit", must_call(lambda code, sig: report(exit=[code, sig]), 1, name="worker exit"))

    def on_cluster_exit(w, code, sig):
        report(handles_left=sorted(cluster._engine.listeners.handles), workers_left=len(cluster.workers))

    cluster.on("exit", must_call(on_cluster_exit, 1))
    cluster.disconnect()
    report(rc=cluster.run(), policy=cluster._engine.policy)
else:
    try:
        server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    except OSError as exc:
        report(worker_listen_error=exc.errno)
    else:
        server.serve_forever()
"""


def test_cluster_disconnect_leak(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("policy") == 1  # SCHED_NONE
    assert res.report("exit") == [0, None]
    assert res.report("handles_left") == []
    assert res.report("workers_left") == 0
    assert res.report("rc") == 0
