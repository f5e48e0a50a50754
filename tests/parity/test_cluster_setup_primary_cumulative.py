"""Port of Node's test-cluster-setup-primary-cumulative.js.

Python translation. ``cluster.settings == {}`` before any call. After
``setup_primary()`` it is exactly Node's default dict in Python terms:

    {"exec": os.path.abspath(sys.argv[0]),   # Node: process.argv[1]
     "args": sys.argv[1:],                   # Node: process.argv.slice(2)
     "exec_argv": <interpreter options>,     # Node: process.execArgv
     "silent": False}

where the interpreter options are the ones the primary was started with,
as given on its command line (``sys.orig_argv`` between the interpreter and
the script), like Node's execArgv. The primary is started by a small runner
as ``python -u -X utf8 -W ignore::DeprecationWarning primary.py a1 a2``, so
exec_argv must be ["-u", "-X", "utf8", "-W", "ignore::DeprecationWarning"].
Later calls with exec, then args, then exec_argv each change only that key,
and a final call with no arguments keeps everything. Each call emits 'setup'
with the settings of that moment.
"""

from __future__ import annotations

FLAGS = ["-u", "-X", "utf8", "-W", "ignore::DeprecationWarning"]

PRIMARY = """
import os
import sys
import pycluster as cluster
from harness import deadline, must_call, report

deadline(20)
report(initial=cluster.settings)
seen = []
cluster.on("setup", must_call(lambda settings: seen.append(dict(settings)), 5))
steps = [cluster.setup_primary()]
steps.append(cluster.setup_primary(exec="/some/other/worker.py"))
steps.append(cluster.setup_primary(args=["x", "y"]))
steps.append(cluster.setup_primary(exec_argv=["-X", "dev"]))
steps.append(cluster.setup_primary())
report(steps=[dict(s) for s in steps], final=dict(cluster.settings),
       main=os.path.abspath(sys.argv[0]), orig_argv=sys.orig_argv)
report(primary_rc=cluster.run())
report(seen=seen)
"""

RUNNER = """
import subprocess
import sys
from harness import deadline

deadline(25)
proc = subprocess.run([sys.executable, *FLAGS, "primary.py", "a1", "a2"], timeout=20)
sys.exit(proc.returncode)
"""


def run_primary(run_script, tmp_path):
    (tmp_path / "primary.py").write_text(PRIMARY)
    res = run_script(f"FLAGS = {FLAGS!r}\n" + RUNNER, timeout=30, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.report("primary_rc") == 0
    return res


def test_default_settings_dict(run_script, tmp_path):
    res = run_primary(run_script, tmp_path)
    assert res.report("initial") == {}
    main = res.report("main")
    assert main == str(tmp_path / "primary.py")
    default = {"exec": main, "args": ["a1", "a2"], "exec_argv": FLAGS, "silent": False}
    assert res.report("steps")[0] == default, f"orig_argv={res.report('orig_argv')}"


def test_later_calls_change_only_their_key(run_script, tmp_path):
    res = run_primary(run_script, tmp_path)
    steps = res.report("steps")
    default = steps[0]
    assert set(default) == {"exec", "args", "exec_argv", "silent"}
    assert default["args"] == ["a1", "a2"] and default["silent"] is False
    assert steps[1] == {**default, "exec": "/some/other/worker.py"}
    assert steps[2] == {**default, "exec": "/some/other/worker.py", "args": ["x", "y"]}
    expected_last = {**default, "exec": "/some/other/worker.py", "args": ["x", "y"],
                     "exec_argv": ["-X", "dev"]}
    assert steps[3] == expected_last
    assert steps[4] == expected_last
    assert res.report("final") == expected_last
    # one 'setup' per call, each carrying the settings of that call
    assert res.report("seen") == steps
