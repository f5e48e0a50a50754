"""Port of Node's test/parallel/test-cluster-disconnect-idle-worker.js.

Two workers with no servers; ``fork`` is called unbound (``fork =
cluster.fork``), so it must not need ``self``/``this``. ``cluster.disconnect(cb)``
is called at once (before the workers are online); ``cb`` runs and
``cluster.workers`` is empty at that moment.

Python translation: identical; beyond Node the exits are checked to be
voluntary with code 0 (an idle worker whose main program has ended leaves
cleanly once disconnected).
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    fork = cluster.fork
    fork()
    fork()
    exits = []
    cluster.on("exit", lambda w, code, sig: exits.append([code, sig, w.exited_after_disconnect]))

    def on_disconnected():
        report(workers=dict(cluster.workers), exits=exits)

    cluster.disconnect(must_call(on_disconnected, 1))
    report(rc=cluster.run())
"""


def test_cluster_disconnect_idle_worker(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("workers") == {}
    assert res.report("exits") == [[0, None, True], [0, None, True]]
    assert res.report("rc") == 0
