"""Port of Node's test-cluster-fork-env.js (plus the NODE_UNIQUE_ID part of
test-cluster-basic.js).

Python translation: the primary sets ``cluster_test_overwrite=old`` in its own
``os.environ`` and forks with ``{"cluster_test_prop": "custom",
"cluster_test_overwrite": "new"}``. The worker sees the added variable, the
override wins over the inherited value, ``cluster.worker.send`` returns
True, and pycluster's own variables (``PYCLUSTER_WORKER_ID`` and the rest of
the bootstrap variables) are not visible in the worker's ``os.environ``
(Node strips NODE_UNIQUE_ID). A plain subprocess started from the worker is
not a worker: it imports pycluster as a primary.
"""

from __future__ import annotations

SCRIPT = """
import json
import os
import subprocess
import sys
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    os.environ["cluster_test_overwrite"] = "old"

    def on_message(message):
        report(worker_env=message)
        worker.disconnect()

    worker = cluster.fork({"cluster_test_prop": "custom", "cluster_test_overwrite": "new"})
    worker.on("message", must_call(on_message, 1))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    report(primary_rc=cluster.run())
else:
    child = subprocess.run(
        [sys.executable, "-c",
         "import json, os, pycluster; print(json.dumps([pycluster.is_worker, pycluster.is_primary,"
         " pycluster.worker is None, sorted(k for k in os.environ if k.startswith('PYCLUSTER_'))]))"],
        capture_output=True, text=True, timeout=15)
    info = {
        "prop": os.environ.get("cluster_test_prop"),
        "overwrite": os.environ.get("cluster_test_overwrite"),
        "pycluster_vars": sorted(k for k in os.environ if k.startswith("PYCLUSTER_")),
        "is_worker": cluster.is_worker,
        "worker_id": cluster.worker.id,
        "subprocess": json.loads(child.stdout) if child.returncode == 0 else child.stderr,
    }
    info["send_returned"] = cluster.worker.send(info)
    report(send_returned=info["send_returned"])
"""


def test_worker_environment(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    env = res.report("worker_env")
    assert env["prop"] == "custom"
    assert env["overwrite"] == "new"
    assert env["is_worker"] is True and env["worker_id"] == 1
    assert env["pycluster_vars"] == [], "bootstrap variables leak into the worker's environment"
    assert env["subprocess"] == [False, True, True, []], "a plain subprocess of a worker became a worker"
    assert res.report("send_returned") is True
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
