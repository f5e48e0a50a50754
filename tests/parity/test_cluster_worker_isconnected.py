"""Port of Node's test/parallel/test-cluster-worker-isconnected.js.

Primary: ``worker.is_connected()`` is True synchronously right after
``fork()`` and False inside worker 'disconnect'. Worker:
``cluster.worker.is_connected()`` is True at start and False inside its
'disconnect' handler. The trigger: the worker sends 'readyToDisconnect' and
the primary calls ``worker.disconnect()``.

Python translation: Node checks the worker side in both
``cluster.worker`` 'disconnect' and process 'disconnect'; pycluster has no
separate process emitter, so there is one worker-side handler (checked to
run exactly once with ``must_call``, which exits 99 otherwise).
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    report(primary_after_fork=worker.is_connected())

    def on_message(msg):
        if msg == "readyToDisconnect":
            worker.disconnect()

    worker.on("message", must_call(on_message, 1))
    worker.on("disconnect", must_call(lambda: report(primary_at_disconnect=worker.is_connected()), 1))
    worker.on("exit", must_call(lambda code, sig: report(exit=[code, sig]), 1))
    report(rc=cluster.run())
else:
    report(worker_at_start=cluster.worker.is_connected())
    cluster.worker.on("disconnect",
                      must_call(lambda: report(worker_at_disconnect=cluster.worker.is_connected()), 1))
    cluster.worker.send("readyToDisconnect")
"""


def test_cluster_worker_isconnected(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("primary_after_fork") is True
    assert res.report("primary_at_disconnect") is False
    assert res.report("worker_at_start") is True
    assert res.report("worker_at_disconnect") is False
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
