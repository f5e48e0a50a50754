"""Port of Node's test/parallel/test-cluster-worker-destroy.js.

Two workers cover both worker-side kill paths. Worker 1 calls
``cluster.worker.disconnect()`` (which returns ``cluster.worker`` itself) and
calls ``cluster.worker.destroy()`` from its own 'disconnect' handler, i.e.
when already disconnected. Worker 2 calls ``destroy()`` while still
connected. Neither may raise or hang, and the primary sees 'disconnect'
exactly once and 'exit' exactly once for each worker.

Python translation: Node's process-level 'disconnect' is the worker's
``cluster.worker`` 'disconnect' event (pycluster has no separate process
emitter). Beyond Node, the test also checks that both exits are voluntary
(``exited_after_disconnect`` True) with code 0, as SPEC section 2 describes
for a worker-side disconnect/kill.
"""

from __future__ import annotations

SCRIPT = r"""
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    for _ in range(2):
        worker = cluster.fork()

        def on_exit(code, sig, worker=worker):
            report(exit={"id": worker.id, "exit": [code, sig],
                         "voluntary": worker.exited_after_disconnect})

        worker.on("disconnect", must_call(lambda: None, 1, name=f"disconnect {worker.id}"))
        worker.on("exit", must_call(on_exit, 1, name=f"exit {worker.id}"))
    report(rc=cluster.run())
elif cluster.worker.id == 1:
    # After a worker-side disconnect the worker is SIGTERMed as soon as the
    # channel has closed, so the main thread may not get to run code after
    # disconnect() returns: the 'disconnect' handler reports the return value,
    # and the lock makes it wait until that value has been stored.
    lock = threading.RLock()
    returned = {}

    def on_disconnect():
        with lock:
            report(disconnect_returns_self=returned.get("value") is cluster.worker)
        try:
            cluster.worker.destroy()
        except BaseException as exc:
            report(destroy_after_disconnect_raised=repr(exc))
            raise
        report(destroy_after_disconnect_ok=True)

    cluster.worker.on("disconnect", must_call(on_disconnect, 1))
    with lock:
        returned["value"] = cluster.worker.disconnect()
else:
    # destroy() while connected: an exception here would make the exit code 1
    cluster.worker.destroy()
"""


def test_cluster_worker_destroy(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("disconnect_returns_self") is True
    assert res.report("destroy_after_disconnect_ok") is True
    exits = sorted(res.all("exit"), key=lambda e: e["id"])
    assert exits == [{"id": 1, "exit": [0, None], "voluntary": True},
                     {"id": 2, "exit": [0, None], "voluntary": True}]
    assert res.report("rc") == 0
