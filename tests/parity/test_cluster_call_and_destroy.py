"""Port of Node's test/parallel/test-cluster-call-and-destroy.js.

The worker checks ``cluster.worker.is_connected()`` is True, then calls
``cluster.worker.disconnect()``. In worker 'disconnect' the primary checks
``worker.is_connected()`` is False and calls ``worker.destroy()``: killing an
already disconnected (possibly already exited) worker must not raise.

Python translation: the test also calls ``destroy()`` again in worker
'exit', when the process is certainly gone (no ProcessLookupError may
escape), and checks the exit stays voluntary (``exited_after_disconnect``).
The exit status is not asserted, as in Node: the late SIGTERM from
``destroy()`` races with the worker's own exit.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_disconnect():
        report(connected_at_disconnect=worker.is_connected())
        worker.destroy()
        report(destroy_at_disconnect_ok=True)

    def on_exit(code, sig):
        worker.destroy()
        report(destroy_at_exit_ok=True, voluntary=worker.exited_after_disconnect,
               dead=worker.is_dead())

    worker.on("disconnect", must_call(on_disconnect, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    report(worker_connected_at_start=cluster.worker.is_connected())
    cluster.worker.disconnect()
"""


def test_cluster_call_and_destroy(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("worker_connected_at_start") is True
    assert res.report("connected_at_disconnect") is False
    assert res.report("destroy_at_disconnect_ok") is True
    assert res.report("destroy_at_exit_ok") is True
    assert res.report("voluntary") is True
    assert res.report("dead") is True
    assert res.report("rc") == 0
