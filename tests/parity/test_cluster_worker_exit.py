"""Port of Node's test/parallel/test-cluster-worker-exit.js.

The worker starts an HTTP server on 127.0.0.1 port 0 and exits with code 42
once it is listening. Checked once both worker 'disconnect' and worker
'exit' have fired (in either order): cluster 'disconnect', cluster 'exit',
worker 'disconnect' and worker 'exit' each fired exactly once; cluster
'exit' saw ``exit_code == 42`` and ``signal_code is None``; worker 'exit'
got ``(42, None)``; at worker 'disconnect' the state was 'disconnected' and
``exited_after_disconnect`` was strictly ``False``; the pid is gone at
'exit'.

Python translation: Node's ``worker.process.exitCode/signalCode`` are
``worker.exit_code/signal_code``; "listening" in the worker is the return
of the ``HTTPServer`` constructor (bind + listen, shared through the
primary); ``process.exit(42)`` is ``sys.exit(42)``.
"""

from __future__ import annotations

SCRIPT = r"""
import http.server
import os
import sys

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

    def on_cluster_disconnect(w):
        results["cluster_disconnect"] += 1

    def on_cluster_exit(w, code, sig):
        results["cluster_exit"] += 1
        results["cluster_codes"] = [w.exit_code, w.signal_code]

    def on_disconnect():
        results["worker_disconnect"] += 1
        results["state_at_disconnect"] = str(worker.state)
        results["exited_after_disconnect"] = worker.exited_after_disconnect
        if results["worker_exit"]:
            cluster._engine.loop.call_soon(finish)

    def on_exit(code, sig):
        results["worker_exit"] += 1
        results["exit_args"] = [code, sig]
        results["died"] = not alive(worker.pid)
        if results["worker_disconnect"]:
            cluster._engine.loop.call_soon(finish)

    def finish():
        report(results=results)

    cluster.on("disconnect", must_call(on_cluster_disconnect, 1))
    cluster.on("exit", must_call(on_cluster_exit, 1))
    worker.on("disconnect", must_call(on_disconnect, 1))
    worker.on("exit", must_call(on_exit, 1))
    worker.on("listening", must_call(lambda address: report(listening=address.port), 1))
    report(rc=cluster.run())
    finish()
else:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    sys.exit(42)
"""


def test_cluster_worker_exit(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("rc") == 0
    # the report made once both events had fired equals the one made after run()
    first, last = res.all("results")
    assert first == last
    assert first == {
        "cluster_disconnect": 1, "cluster_exit": 1, "worker_disconnect": 1, "worker_exit": 1,
        "cluster_codes": [42, None], "exit_args": [42, None],
        "state_at_disconnect": "disconnected", "exited_after_disconnect": False, "died": True,
    }
