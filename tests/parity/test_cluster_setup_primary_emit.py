"""Port of Node's test-cluster-setup-primary-emit.js.

Python translation: ``cluster.once("setup", cb)`` then
``setup_primary(exec="new-exec")``: cb receives the settings dict as its
argument, with exec == "new-exec". From inside that handler a second
``cluster.once("setup", cb2)`` and a ``setup_primary()`` with no arguments:
cb2 receives settings that still carry an exec key. No worker is forked;
``cluster.run()`` dispatches the pending events and returns 0.
"""

from __future__ import annotations

SCRIPT = """
import pycluster as cluster
from harness import deadline, must_call, report

deadline(10)


def second(settings):
    report(second={"type": type(settings).__name__, "has_exec": "exec" in settings,
                   "exec": settings.get("exec")})


def first(settings):
    report(first={"type": type(settings).__name__, "exec": settings.get("exec")})
    cluster.once("setup", must_call(second, 1))
    cluster.setup_primary()


cluster.once("setup", must_call(first, 1))
cluster.setup_primary(exec="new-exec")
report(primary_rc=cluster.run())
"""


def test_setup_event_carries_the_settings(run_script):
    res = run_script(SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("first") == {"type": "dict", "exec": "new-exec"}
    assert res.report("second") == {"type": "dict", "has_exec": True, "exec": "new-exec"}
    assert res.report("primary_rc") == 0
