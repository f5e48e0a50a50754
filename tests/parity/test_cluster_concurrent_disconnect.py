"""Port of Node's test/parallel/test-cluster-concurrent-disconnect.js.

Several workers; once all are online the primary sends each connected
worker 'disconnect' or 'destroy' (alternating), and each worker calls
``cluster.worker.<msg>()``. Whenever any worker disconnects, the primary
sends 'disconnect' to every worker still connected, so sends race with
channels that are closing. Every worker must exit ``(0, None)``; the only
errors allowed on a Worker are those of a send racing a closing channel;
the primary never crashes.

Python translation: Node uses one worker per CPU; this uses
``max(4, cpu_count)`` capped at 8 so the race is exercised on small
machines. Node allows 'error' with syscall 'write' and EPIPE/ECONNRESET;
here that is ``BrokenPipeError``/``ConnectionResetError`` or pycluster's
``ChannelClosedError``. A failed ``send()`` returning False is not an error.
"""

from __future__ import annotations

SCRIPT = r"""
import os

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(25)
    count = min(8, max(4, os.cpu_count() or 1))
    workers = []
    online = [0]
    errors = []
    exits = []

    def on_online():
        online[0] += 1
        if online[0] == count:
            for i, w in enumerate(workers):
                if w.is_connected():
                    w.send("disconnect" if i % 2 else "destroy")

    def on_disconnect():
        for w in workers:
            if w.is_connected():
                w.send("disconnect")

    for _ in range(count):
        worker = cluster.fork()
        workers.append(worker)
        worker.once("online", must_call(on_online, 1, name=f"online {worker.id}"))
        worker.on("error", lambda exc: errors.append(type(exc).__name__))
        worker.once("disconnect", must_call(on_disconnect, 1, name=f"disconnect {worker.id}"))
        worker.once("exit", must_call(lambda code, sig: exits.append([code, sig]), 1,
                                      name=f"exit {worker.id}"))
    report(rc=cluster.run())
    report(count=count, exits=exits, errors=errors, workers_left=len(cluster.workers))
else:
    def on_message(msg):
        if cluster.worker.is_connected():
            getattr(cluster.worker, msg)()

    cluster.worker.on("message", on_message)
"""


def test_cluster_concurrent_disconnect(run_script):
    res = run_script(SCRIPT, timeout=40)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("rc") == 0
    count = res.report("count")
    assert res.report("exits") == [[0, None]] * count
    assert set(res.report("errors")) <= {"BrokenPipeError", "ConnectionResetError", "ChannelClosedError"}
    assert res.report("workers_left") == 0
