"""Port of Node's test-cluster-primary-error.js.

Python translation: a runner starts the primary as a plain subprocess (and
makes itself a child subreaper, so it can reap workers the primary leaves
behind). The primary forks two workers (http.server on 127.0.0.1:0) and
reports their pids from the cluster 'fork' event; when both are listening a
'listening' handler raises an uncaught exception. run() ends with that
exception, so the primary exits with code 1, and then both worker pids die
(polled with a bounded deadline): no orphans.
"""

from __future__ import annotations

RUNNER = """
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from harness import deadline, report

deadline(25)
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
proc = subprocess.Popen([sys.executable, "primary.py"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
pids = []
for line in proc.stdout:
    sys.stdout.write(line)
    if line.startswith("@@ "):
        rep = json.loads(line[3:])
        if "forked_pid" in rep:
            pids.append(rep["forked_pid"])
        if rep.get("throwing"):
            break
primary_rc = proc.wait(timeout=10)
stderr = proc.stderr.read()
gone = set()
limit = time.monotonic() + 10
while len(gone) < len(pids) and time.monotonic() < limit:
    for pid in pids:
        if pid in gone:
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                gone.add(pid)
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.add(pid)
    time.sleep(0.005)
report(runner={"primary_rc": primary_rc, "pids": pids, "alive": [p for p in pids if p not in gone],
               "primary_stderr_tail": stderr[-2000:]})
"""

PRIMARY = """
import http.server
import pycluster as cluster
from harness import report

if cluster.is_primary:
    cluster.on("fork", lambda worker: report(forked_pid=worker.pid))
    listening = set()

    def on_listening(worker, address):
        listening.add(worker.id)
        if len(listening) == 2:
            report(throwing=True)
            raise RuntimeError("uncaught error in the primary")

    cluster.on("listening", on_listening)
    cluster.fork()
    cluster.fork()
    cluster.run()
    report(unreachable=True)
else:
    http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_uncaught_error_in_primary_exit_1_and_workers_die(run_script, tmp_path):
    (tmp_path / "primary.py").write_text(PRIMARY)
    res = run_script(RUNNER, timeout=30, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    result = res.report("runner")
    assert result["primary_rc"] == 1, result["primary_stderr_tail"]
    assert "uncaught error in the primary" in result["primary_stderr_tail"]
    assert len(result["pids"]) == 2
    assert result["alive"] == [], "workers outlived their primary"
    assert res.all("unreachable") == []
