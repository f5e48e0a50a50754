"""Port of Node's test/parallel/test-cluster-disconnect-exitedAfterDisconnect-race.js
(formerly test-cluster-disconnect-suicide-race.js).

The worker calls ``cluster.worker.disconnect()`` during start-up. Its own
'disconnect' event must not fire synchronously inside ``disconnect()`` (the
worker first tells the primary and waits for the ack), but it must fire
later; the primary's cluster 'exit' gets code 0.

Python translation: Node checks "not fired by the next tick". Here the
worker's handlers run on pycluster's channel thread, so the check is that
the handler did not run while ``disconnect()`` was executing: the main thread
holds an ``RLock`` around the call and the handler takes it first, so a
synchronous emission (same thread, re-entrant) would see ``in_call`` True,
while a correct asynchronous one waits for the call to return. The worker
checks its handler ran exactly once with ``must_call`` (exit code 99 if not).
"""

from __future__ import annotations

SCRIPT = r"""
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_exit(w, code, sig):
        report(exit=[code, sig], voluntary=w.exited_after_disconnect)

    cluster.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    lock = threading.RLock()
    state = {"in_call": False}

    def on_disconnect():
        with lock:
            report(in_call_when_fired=state["in_call"],
                   fired_on_main_thread=threading.current_thread() is threading.main_thread(),
                   connected_in_handler=cluster.worker.is_connected())

    cluster.worker.on("disconnect", must_call(on_disconnect, 1))
    with lock:
        state["in_call"] = True
        cluster.worker.disconnect()
        state["in_call"] = False
"""


def test_cluster_disconnect_exitedafterdisconnect_race(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("in_call_when_fired") is False
    assert res.report("fired_on_main_thread") is False
    assert res.report("connected_in_handler") is False
    assert res.report("exit") == [0, None]
    assert res.report("voluntary") is True
    assert res.report("rc") == 0
