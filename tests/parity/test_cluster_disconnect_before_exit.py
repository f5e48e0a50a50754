"""Port of Node's test/parallel/test-cluster-disconnect-before-exit.js.

On 'online' the primary calls ``worker.disconnect()``, and from that worker's
'disconnect' handler it calls ``cluster.disconnect()``. The worker has
disconnected but maybe not exited yet: ``cluster.disconnect()`` must skip it
(no error, nothing sent on a closed channel) and the primary must end.

Python translation: as in Node, ``cluster.disconnect`` itself is the
handler. Beyond Node, a second ``cluster.disconnect(cb)`` from the same
handler must call ``cb`` once the worker has gone, and the worker exits
``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("online", must_call(lambda: worker.disconnect(), 1))
    worker.on("disconnect", must_call(cluster.disconnect, 1))

    def again():
        cluster.disconnect(must_call(lambda: report(workers_at_cb=len(cluster.workers)), 1))

    worker.on("disconnect", again)
    worker.on("error", lambda exc: report(worker_error=repr(exc)))
    worker.on("exit", must_call(lambda code, sig: report(exit=[code, sig]), 1))
    report(rc=cluster.run())
"""


def test_cluster_disconnect_before_exit(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.all("worker_error") == []
    assert res.report("workers_at_cb") == 0
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
