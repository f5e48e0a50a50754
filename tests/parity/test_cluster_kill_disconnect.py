"""Port of Node's test/parallel/test-cluster-kill-disconnect.js (regression
test for nodejs/node#3238).

Two workers are forked with env ``action=disconnect`` and ``action=kill``;
each calls ``cluster.worker.<action>()`` from inside the worker. For both,
the primary must already see ``exited_after_disconnect is True`` at
'disconnect' and at 'exit', whichever comes first: the worker tells the
primary (and waits for the ack) before it closes its channel.

Python translation: identical, plus the exit status: a worker-side
disconnect/kill ends a plain worker with code 0 (Node: ``process.exit(0)``;
pycluster: SIGTERM to itself, whose default handler exits 0).
"""

from __future__ import annotations

SCRIPT = r"""
import os

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    for action in ("disconnect", "kill"):
        worker = cluster.fork({"action": action})

        def on_disconnect(worker=worker, action=action):
            report(flag={"action": action, "event": "disconnect",
                         "value": worker.exited_after_disconnect})

        def on_exit(code, sig, worker=worker, action=action):
            report(flag={"action": action, "event": "exit", "value": worker.exited_after_disconnect})
            report(exit={"action": action, "exit": [code, sig]})

        worker.on("disconnect", must_call(on_disconnect, 1, name=f"{action} disconnect"))
        worker.on("exit", must_call(on_exit, 1, name=f"{action} exit"))
    report(rc=cluster.run())
else:
    getattr(cluster.worker, os.environ["action"])()
"""


def test_cluster_kill_disconnect(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    flags = sorted((f["action"], f["event"], f["value"]) for f in res.all("flag"))
    assert flags == [("disconnect", "disconnect", True), ("disconnect", "exit", True),
                     ("kill", "disconnect", True), ("kill", "exit", True)]
    exits = sorted((e["action"], e["exit"][0], e["exit"][1]) for e in res.all("exit"))
    assert exits == [("disconnect", 0, None), ("kill", 0, None)]
    assert res.report("rc") == 0
