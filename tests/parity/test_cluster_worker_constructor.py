"""Port of Node's test/parallel/test-cluster-worker-constructor.js.

``cluster.Worker()`` with no options: ``exited_after_disconnect is None``,
``state == 'none'``, ``id == 0``, ``process is None``. With ``id=3,
state='online', process=...`` those are taken as given.

Python translation: Node's "calling Worker without ``new`` still returns an
instance" has no Python counterpart (a class call always constructs). The
checks run inside a real primary script, as the other parity tests do; the
state is compared as a string (WorkerState is a str enum).
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import report

bare = cluster.Worker()
report(bare=[bare.exited_after_disconnect, str(bare.state), bare.state == "none",
             bare.id, bare.process is None, isinstance(bare, cluster.EventEmitter)])

proc = object()
given = cluster.Worker(id=3, state="online", process=proc)
report(given=[given.exited_after_disconnect, str(given.state), given.state == "online",
              given.id, given.process is proc])
report(workers=len(cluster.workers))
"""


def test_cluster_worker_constructor(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("bare") == [None, "none", True, 0, True, True]
    assert res.report("given") == [None, "online", True, 3, True]
    # constructing a Worker forks nothing and registers nothing
    assert res.report("workers") == 0
