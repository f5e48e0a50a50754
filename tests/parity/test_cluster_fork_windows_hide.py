"""Port of the part of Node's test-cluster-fork-windowsHide.js that is not
about the Windows console: a ``silent`` worker runs and exits (0, None).
No Node test checks that silent output is really piped (NODE_PARITY R), so
this file also checks that.

Python translation: ``setup_primary(silent=True)``; the worker prints a
line to stdout and another to stderr and exits with ``sys.exit(0)``. The
primary reads them from ``worker.stdout`` / ``worker.stderr`` (after
'exit', so the reads reach EOF at once); nothing of it reaches the
primary's own stdout/stderr, and 'exit' gives (0, None).
"""

from __future__ import annotations

SCRIPT = """
import sys
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.setup_primary(silent=True)
    worker = cluster.fork()
    report(has_pipes=[worker.stdout is not None, worker.stderr is not None])

    def on_exit(code, signal):
        out = worker.stdout.read()
        err = worker.stderr.read()
        if isinstance(out, bytes):
            out, err = out.decode(), err.decode()
        report(exit=[code, signal], piped_out=out, piped_err=err)

    worker.on("exit", must_call(on_exit, 1))
    report(primary_rc=cluster.run())
else:
    print("SILENT-STDOUT-MARKER from worker", cluster.worker.id, flush=True)
    print("SILENT-STDERR-MARKER from worker", cluster.worker.id, file=sys.stderr, flush=True)
    sys.exit(0)
"""


def test_silent_worker_output_is_piped_to_the_primary(run_script):
    res = run_script(SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("has_pipes") == [True, True]
    assert res.report("exit") == [0, None]
    assert "SILENT-STDOUT-MARKER from worker 1" in res.report("piped_out")
    assert "SILENT-STDERR-MARKER from worker 1" in res.report("piped_err")
    # Not inherited: the primary's own streams never saw the worker's lines
    # (the reports above carry them JSON-encoded, so look outside reports).
    raw_out = "\n".join(line for line in res.stdout.splitlines() if not line.startswith("@@ "))
    assert "SILENT-STDOUT-MARKER" not in raw_out
    assert "SILENT-STDERR-MARKER" not in res.stderr
    assert res.report("primary_rc") == 0
