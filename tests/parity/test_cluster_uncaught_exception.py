"""Port of Node's test-cluster-uncaught-exception.js.

Python translation: the primary installs its own ``sys.excepthook`` that
exits with code 42 (Node: an 'uncaughtException' listener calling
process.exit(42)), forks a worker that exits at once, and raises: once from
the worker's 'exit' handler (run() ends with the exception, which reaches
the hook), once at top level right after fork(), before run(). Either way
the primary exits 42: pycluster never replaces the user's hook.
"""

from __future__ import annotations

import pytest

SCRIPT = """
import sys
import pycluster as cluster
from harness import deadline, report

if cluster.is_primary:
    deadline(20)

    def hook(exc_type, exc, tb):
        report(hook_saw=str(exc))
        sys.exit(42)

    sys.excepthook = hook
    worker = cluster.fork()
    if WHERE == "top-level":
        raise RuntimeError("thrown at top level")

    def on_exit(code, signal):
        report(worker_exit=[code, signal])
        raise RuntimeError("thrown in an exit handler")

    worker.on("exit", on_exit)
    cluster.run()
    report(unreachable=True)
else:
    sys.exit(0)
"""


@pytest.mark.parametrize("where", ["handler", "top-level"])
def test_user_excepthook_decides_the_exit_code(run_script, where):
    res = run_script(f"WHERE = {where!r}\n" + SCRIPT, timeout=20)
    assert res.returncode == 42, res.stdout + res.stderr
    assert res.report("hook_saw") == ("thrown in an exit handler" if where == "handler" else "thrown at top level")
    if where == "handler":
        assert res.report("worker_exit") == [0, None]
    assert res.all("unreachable") == []
