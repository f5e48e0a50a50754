"""Port of Node's test/parallel/test-cluster-worker-events.js.

The primary forks and at once sends 'SOME MESSAGE' (before the worker is
online): ``send()`` returns True and the message is queued, not lost. In the
worker it arrives exactly once on ``cluster.worker`` 'message'. The worker
then makes its IPC channel report an error, which must surface as
``cluster.worker`` 'error'; that handler exits with code 2, and the primary's
worker 'exit' and cluster 'exit' get ``(2, None)``.

Python translation:
- pycluster has no separate ``process`` emitter, so Node's "once on process
  'message' and once on cluster.worker 'message'" becomes "exactly once on
  cluster.worker 'message'" (a second message, 'done', proves that no
  duplicate of the first was delivered before it).
- Node's ``process.emit('error', 'HI')`` becomes an error raised by the
  worker's channel object (``cluster.worker._channel._error``, the path every
  IPC error takes); ``exit(2)`` in a worker handler is ``sys.exit(2)``.
"""

from __future__ import annotations

SCRIPT = r"""
import sys

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    report(send_result=worker.send("SOME MESSAGE"), state_at_send=str(worker.state))
    report(send_done=worker.send("done"))

    def on_exit(code, signal):
        report(worker_exit=[code, signal])

    def on_cluster_exit(w, code, signal):
        report(cluster_exit=[code, signal], same_worker=w is worker)

    worker.on("exit", must_call(on_exit, 1))
    cluster.on("exit", must_call(on_cluster_exit, 1))
    report(rc=cluster.run())
else:
    def on_error(exc):
        report(worker_error=str(exc), error_type=type(exc).__name__)
        sys.exit(2)

    def on_message(msg):
        report(worker_got=msg)
        if msg == "done":
            cluster.worker.once("error", on_error)
            cluster.worker._channel._error(RuntimeError("HI"))

    cluster.worker.on("message", on_message)
"""


def test_cluster_worker_events(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("send_result") is True
    assert res.report("state_at_send") == "none"
    assert res.report("send_done") is True
    assert res.all("worker_got") == ["SOME MESSAGE", "done"]
    assert res.report("worker_error") == "HI"
    assert res.report("error_type") == "RuntimeError"
    assert res.report("worker_exit") == [2, None]
    assert res.report("cluster_exit") == [2, None]
    assert res.report("same_worker") is True
    assert res.report("rc") == 0
