"""Port of Node's test-cluster-setup-primary.js.

Python translation: the primary calls
``setup_primary(args=["custom argument"], silent=True)`` and forks two
workers. 'setup' is emitted (once per setup_primary() call, and fork() calls
setup_primary() too: 3 events), ``cluster.settings`` has args[0] ==
"custom argument", silent is True and exec keeps its default (the absolute
path of the main script). Each worker sees "custom argument" as its first
user argument (``sys.argv[1]``; the worker's stdout is piped because of
silent, so it answers over IPC). Cluster 'online' fires exactly twice.
"""

from __future__ import annotations

SCRIPT = """
import os
import sys
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.on("setup", must_call(lambda settings: report(setup_args=settings["args"]), 3))
    cluster.setup_primary(args=["custom argument"], silent=True)
    settings = cluster.settings
    report(settings={"args0": settings["args"][0], "silent": settings["silent"],
                     "exec": settings["exec"], "main": os.path.abspath(sys.argv[0])})
    argv = {}

    def on_message(worker, message):
        argv[worker.id] = message
        if len(argv) == 2:
            report(worker_argv=argv)
            cluster.disconnect()

    cluster.on("message", must_call(on_message, 2))
    cluster.on("online", must_call(n=2))
    cluster.fork()
    cluster.fork()
    report(primary_rc=cluster.run())
else:
    cluster.worker.send(sys.argv[1:])
"""


def test_setup_primary_args_and_silent(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    settings = res.report("settings")
    assert settings["args0"] == "custom argument"
    assert settings["silent"] is True
    assert settings["exec"] == settings["main"]
    assert res.report("worker_argv") == {"1": ["custom argument"], "2": ["custom argument"]}
    assert res.all("setup_args") == [["custom argument"]] * 3
    assert res.report("primary_rc") == 0
