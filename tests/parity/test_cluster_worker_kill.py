"""Port of Node's test/parallel/test-cluster-worker-kill.js.

Same shape as test-cluster-worker-exit, but once the worker listens the
primary kills it with a raw SIGKILL (Node's ``worker.process.kill('SIGKILL')``,
not the Worker API). Every event fires exactly once; worker 'exit' and
cluster 'exit' give ``(None, 'SIGKILL')``; at 'disconnect' the state is
'disconnected' and ``exited_after_disconnect`` is strictly ``False`` (a raw
signal is not a voluntary exit); the pid is gone at 'exit'.

Python translation: ``worker.process`` is a ``psutil.Process`` whose
``kill()`` sends SIGKILL, the literal counterpart of Node's
``worker.process.kill('SIGKILL')``. Signals are reported by name.
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
    results = {"cluster_disconnect": 0, "cluster_exit": 0, "worker_disconnect": 0, "worker_exit": 0}
    worker = cluster.fork()

    def on_listening(address):
        worker.process.kill()

    def on_cluster_disconnect(w):
        results["cluster_disconnect"] += 1

    def on_cluster_exit(w, code, sig):
        results["cluster_exit"] += 1
        results["cluster_codes"] = [w.exit_code, w.signal_code]

    def on_disconnect():
        results["worker_disconnect"] += 1
        results["state_at_disconnect"] = str(worker.state)
        results["exited_after_disconnect"] = worker.exited_after_disconnect

    def on_exit(code, sig):
        results["worker_exit"] += 1
        results["exit_args"] = [code, sig]
        results["died"] = not alive(worker.pid)

    worker.on("listening", must_call(on_listening, 1))
    cluster.on("disconnect", must_call(on_cluster_disconnect, 1))
    cluster.on("exit", must_call(on_cluster_exit, 1))
    worker.on("disconnect", must_call(on_disconnect, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
    report(results=results)
else:
    http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler).serve_forever()
"""


def test_cluster_worker_kill(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("rc") == 0
    assert res.report("results") == {
        "cluster_disconnect": 1, "cluster_exit": 1, "worker_disconnect": 1, "worker_exit": 1,
        "cluster_codes": [None, "SIGKILL"], "exit_args": [None, "SIGKILL"],
        "state_at_disconnect": "disconnected", "exited_after_disconnect": False, "died": True,
    }
