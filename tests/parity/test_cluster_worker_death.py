"""Port of Node's test/parallel/test-cluster-worker-death.js.

The worker exits with code 42 at once (``sys.exit(42)``, Node's
``process.exit(42)``). Worker 'exit' gets ``(42, None)`` and cluster 'exit'
gets the very same Worker object with the same code and signal.
"""

from __future__ import annotations

SCRIPT = r"""
import sys

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("exit", must_call(lambda code, sig: report(worker_exit=[code, sig]), 1))

    def on_cluster_exit(w, code, sig):
        report(cluster_exit=[code, sig], same_worker=w is worker,
               attrs=[w.exit_code, w.signal_code])

    cluster.on("exit", must_call(on_cluster_exit, 1))
    report(rc=cluster.run())
else:
    sys.exit(42)
"""


def test_cluster_worker_death(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("worker_exit") == [42, None]
    assert res.report("cluster_exit") == [42, None]
    assert res.report("attrs") == [42, None]
    assert res.report("same_worker") is True
    assert res.report("rc") == 0
