"""Port of Node's test/parallel/test-cluster-worker-forced-exit.js (NODE_PARITY rule 6).

The worker's 'disconnect' handler arranges to exit with 42 after 10 ms.
Case 1: the primary calls ``worker.disconnect()``: a cluster-initiated
disconnect does not force an exit, so the worker's own delayed exit wins and
'exit' gives 42. Case 2: the primary closes the raw channel (Node's
``worker.process.disconnect()``): an unexpected disconnect forces exit(0)
at once, before the 10 ms timer, so 'exit' gives 0.

Python translation:
- Node's ``setTimeout(() => process.exit(42), 10)`` is a non-daemon
  ``threading.Timer(0.01, os._exit, (42,))`` (explicitly non-daemon; the
  handler runs on pycluster's daemon channel thread): like a pending timer in Node,
  it keeps the interpreter from finishing, and it exits with 42 if the
  process is still alive when it fires.
- Node's raw ``worker.process.disconnect()`` is ``worker._channel.close()``
  on the primary's loop thread (documented in the test API).
- Node disconnects on 'online', when the worker's handler is certainly
  installed (Node registers it before its event loop runs). A pycluster
  worker's channel thread runs beside the main program, so the worker sends
  'ready' once its handler is installed and the primary acts on that.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import os
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report

SENTINEL = 42

if cluster.is_primary:
    deadline(20)
    case = sys.argv[1]
    worker = cluster.fork()

    def on_ready(msg):
        if case == "unforced":
            worker.disconnect()
        else:
            worker._channel.close()

    def on_exit(code, sig):
        report(exit=[code, sig], voluntary=worker.exited_after_disconnect)

    worker.on("message", must_call(on_ready, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    def on_disconnect():
        timer = threading.Timer(0.01, os._exit, (SENTINEL,))
        timer.daemon = False  # it would inherit daemon=True from the channel thread
        timer.start()

    cluster.worker.on("disconnect", on_disconnect)
    cluster.worker.send("ready")
"""


@pytest.mark.parametrize("case, expected, voluntary", [("unforced", [42, None], True),
                                                       ("forced", [0, None], False)])
def test_cluster_worker_forced_exit(run_script, case, expected, voluntary):
    res = run_script(SCRIPT, timeout=30, args=[case])
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("exit") == expected
    assert res.report("voluntary") is voluntary
    assert res.report("rc") == 0
