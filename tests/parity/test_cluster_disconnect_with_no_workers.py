"""Port of Node's test/parallel/test-cluster-disconnect-with-no-workers.js.

``cluster.disconnect(cb)`` with no worker: ``cb`` has not run when
``disconnect()`` returns (a callback is never called synchronously), but it
has run by the time the primary is done.

Python translation: pycluster dispatches callbacks only while the engine
runs, so "by process exit" is "by the time ``cluster.run()`` returns";
``run()`` with nothing to do returns 0 right after running the callback.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

deadline(10)
called = []
cluster.disconnect(must_call(lambda: called.append(True), 1))
report(called_synchronously=bool(called))
report(rc=cluster.run())
report(called_by_end=called)
"""


def test_cluster_disconnect_with_no_workers(run_script):
    res = run_script(SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("called_synchronously") is False
    assert res.report("called_by_end") == [True]
    assert res.report("rc") == 0
