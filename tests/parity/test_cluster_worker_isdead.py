"""Port of Node's test/parallel/test-cluster-worker-isdead.js.

Primary: ``worker.is_dead()`` is False right after ``fork()`` and True
inside 'exit'. Worker: ``cluster.worker.is_dead()`` is False. The primary
kills the worker when it sends 'readyToDie'.

Python translation: ``worker.kill()`` follows SPEC section 2 (disconnect,
then SIGTERM; a plain worker exits 0), so beyond Node the test also checks
that the worker is not yet dead at its 'disconnect' (the signal comes after
the channel closed) and that it exits ``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    report(dead_after_fork=worker.is_dead())

    def on_message(msg):
        if msg == "readyToDie":
            worker.kill()

    worker.on("message", must_call(on_message, 1))
    worker.on("disconnect", must_call(lambda: report(dead_at_disconnect=worker.is_dead()), 1))
    worker.on("exit", must_call(lambda code, sig: report(dead_at_exit=worker.is_dead(),
                                                         exit=[code, sig]), 1))
    report(rc=cluster.run())
else:
    report(worker_dead=cluster.worker.is_dead())
    cluster.worker.send("readyToDie")
"""


def test_cluster_worker_isdead(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("dead_after_fork") is False
    assert res.report("worker_dead") is False
    assert res.report("dead_at_disconnect") is False
    assert res.report("dead_at_exit") is True
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
