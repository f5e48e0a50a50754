"""Port of Node's test/parallel/test-cluster-worker-init.js (nodejs/node-v0.x-archive#7998).

The worker registers ``cluster.worker.on('message')`` at start-up; the
primary sends 'foo' in its worker 'online' handler. The message must not be
lost: the worker answers ``True`` (it got 'foo'), and on that answer the
primary calls ``worker.disconnect()``, which returns the Worker itself.

Python translation: the worker's main program ends right after registering
its listener; a connected pycluster worker stays in the cluster until it is
disconnected (Node keeps it alive through the IPC channel), then exits 0.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_online():
        worker.send("foo")

    def on_message(msg):
        report(reply=msg)
        report(disconnect_returns_worker=worker.disconnect() is worker)

    def on_exit(code, signal):
        report(exit=[code, signal], exited_after_disconnect=worker.exited_after_disconnect)

    worker.on("online", must_call(on_online, 1))
    worker.on("message", must_call(on_message, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    cluster.worker.on("message", lambda msg: cluster.worker.send(msg == "foo"))
"""


def test_cluster_worker_init(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("reply") is True
    assert res.report("disconnect_returns_worker") is True
    assert res.report("exit") == [0, None]
    assert res.report("exited_after_disconnect") is True
    assert res.report("rc") == 0
