"""Port of Node's test/parallel/test-cluster-kill-infinite-loop.js.

The worker spins in a busy ``while True: pass``; on 'online' the primary
sends it a raw SIGTERM (Node's ``worker.process.kill()``). The worker must
die without cooperating (no disconnect, no message).

Python translation: the raw signal is ``worker.signal("SIGTERM")`` (pidfd,
Node's ``worker.process.kill``). Per SPEC section 2 a worker's default
SIGTERM handler raises ``SystemExit(0)``, so where Node reports
``(null, 'SIGTERM')`` a plain pycluster worker reports ``(0, None)``; the
signal was not requested through the Worker API, so
``exited_after_disconnect`` is False.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(5)  # the kill takes milliseconds; a worker that ignores it must not stall the suite
    worker = cluster.fork()
    worker.on("online", must_call(lambda: report(signalled=worker.signal("SIGTERM")), 1))

    def on_exit(code, sig):
        report(exit=[code, sig], exited_after_disconnect=worker.exited_after_disconnect)

    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    while True:
        pass
"""


def test_cluster_kill_infinite_loop(run_script):
    res = run_script(SCRIPT, timeout=15)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("signalled") is True
    assert res.report("exit") == [0, None]
    assert res.report("exited_after_disconnect") is False
    assert res.report("rc") == 0
