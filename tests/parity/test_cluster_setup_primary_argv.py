"""Port of Node's test-cluster-setup-primary-argv.js.

Python translation: the primary appends an argument to ``sys.argv`` and
then calls ``setup_primary()``. 'setup' fires (within 1 s) and the last
element of ``settings["args"]`` is the one just appended: the defaults are
read at call time, not when pycluster was imported.
"""

from __future__ import annotations

SCRIPT = """
import sys
import time
import pycluster as cluster
from harness import deadline, must_call, report

deadline(10)
sys.argv.append("--appended-after-import")
started = time.monotonic()


def on_setup(settings):
    report(args=settings["args"], elapsed=time.monotonic() - started)


cluster.on("setup", must_call(on_setup, 1))
cluster.setup_primary()
report(primary_rc=cluster.run())
"""


def test_default_args_read_at_call_time(run_script):
    res = run_script(SCRIPT, timeout=20, args=("first",))
    assert res.returncode == 0, res.stderr
    assert res.report("args") == ["first", "--appended-after-import"]
    assert res.report("elapsed") < 1.0
    assert res.report("primary_rc") == 0
