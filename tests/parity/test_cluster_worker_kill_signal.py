"""Port of Node's test/parallel/test-cluster-worker-kill-signal.js.

Once the worker listens, the primary calls ``worker.kill('SIGKILL')`` (the
Worker API). Worker 'disconnect' fires exactly once with state
'disconnected'; worker 'exit' fires exactly once with ``(None, 'SIGKILL')``
and the pid is gone; cluster 'exit' fires exactly once; ``cluster.workers``
is empty by the time the later of 'disconnect'/'exit' is emitted.

Python translation (SPEC section 2 wins over Node >= 15, NODE_PARITY rule 5):
a primary-side ``kill()`` first disconnects the worker and sends the signal
once the channel has closed, and it marks the exit as voluntary, so
``exited_after_disconnect`` is True at 'disconnect' and at 'exit' (Node >= 15
says False). The signal asked for is still what kills the worker.
"""

from __future__ import annotations

SCRIPT = r"""
import http.server
import os

import pycluster as cluster
from harness import deadline, must_call, report


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    seen = []

    def on_listening(address):
        report(kill_returned=worker.kill("SIGKILL"))

    def on_disconnect():
        seen.append("disconnect")
        report(disconnect=[str(worker.state), worker.exited_after_disconnect],
               workers_at_disconnect=sorted(cluster.workers), second=seen == ["exit", "disconnect"])

    def on_exit(code, sig):
        seen.append("exit")
        report(exit=[code, sig], died=not alive(worker.pid),
               exited_after_disconnect_at_exit=worker.exited_after_disconnect,
               workers_at_exit=sorted(cluster.workers))

    worker.on("listening", must_call(on_listening, 1))
    worker.on("disconnect", must_call(on_disconnect, 1))
    worker.on("exit", must_call(on_exit, 1))
    cluster.on("exit", must_call(lambda w, code, sig: report(cluster_exit=[code, sig]), 1))
    report(rc=cluster.run())
    report(order=seen)
else:
    http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler).serve_forever()
"""


def test_cluster_worker_kill_signal(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("kill_returned") is None
    assert res.report("disconnect") == ["disconnected", True]
    assert res.report("exit") == [None, "SIGKILL"]
    assert res.report("cluster_exit") == [None, "SIGKILL"]
    assert res.report("died") is True
    assert res.report("exited_after_disconnect_at_exit") is True
    # rule 3: the worker leaves cluster.workers before the later of the two events
    order = res.report("order")
    assert sorted(order) == ["disconnect", "exit"]
    later = "workers_at_exit" if order[-1] == "exit" else "workers_at_disconnect"
    assert res.report(later) == []
    assert res.report("rc") == 0
