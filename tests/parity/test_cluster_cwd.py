"""Port of Node's test-cluster-cwd.js.

Python translation: ``settings`` has no cwd by default (after the first
fork, ``settings.get("cwd") is None``) and the first worker runs in the
primary's cwd (``os.getcwd()``). After ``setup_primary(cwd=<tmp subdir>)``,
``settings["cwd"]`` is that directory and the second worker runs there.
"""

from __future__ import annotations

import os

SCRIPT = """
import os
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    other = os.path.join(os.getcwd(), "elsewhere")
    os.mkdir(other)
    report(primary_cwd=os.getcwd(), other=other)

    def on_message(worker, message):
        report(worker_cwd=[worker.id, message])
        worker.disconnect()
        if worker.id == 1:
            cluster.setup_primary(cwd=other)
            report(cwd_setting=cluster.settings.get("cwd"))
            cluster.fork()

    cluster.on("message", must_call(on_message, 2))
    cluster.fork()
    report(default_cwd_setting=cluster.settings.get("cwd", "absent"))
    report(primary_rc=cluster.run())
else:
    cluster.worker.send(os.getcwd())
"""


def test_workers_run_in_the_configured_cwd(run_script, tmp_path):
    res = run_script(SCRIPT, timeout=20, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.report("default_cwd_setting") in ("absent", None)
    primary_cwd = res.report("primary_cwd")
    other = res.report("other")
    assert os.path.samefile(primary_cwd, tmp_path)
    assert res.report("cwd_setting") == other
    assert res.all("worker_cwd") == [[1, primary_cwd], [2, other]]
    assert res.report("primary_rc") == 0
