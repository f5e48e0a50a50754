"""Port of Node's test-cluster-primary-kill.js, plus the SIGKILL case from
SPEC section 2 / RELIABILITY 2.4 (no Node test).

Python translation: a runner (the Node test's outer process) starts the
primary as a plain subprocess and makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so the workers it outlives are re-parented to it
and it can reap them and read their exit status. The primary forks one
worker running an http.server on 127.0.0.1:0 and, on 'listening', reports
the worker's pid.

* primary-kill: the primary then exits with ``sys.exit(0)`` from the
  handler. The primary exits 0 and the worker is gone afterwards (polled
  with a bounded deadline). How it goes (its channel closed: exit 0, as
  NODE_PARITY 0.1 rule 6; or the primary killed it on the way out) is not
  asserted, as in Node.
* SIGKILL: the runner SIGKILLs the primary instead. Every worker is gone
  within 1 s, measured from the kill.
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
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
proc = subprocess.Popen([sys.executable, "primary.py"], stdout=subprocess.PIPE, text=True)
pids = []
for line in proc.stdout:
    sys.stdout.write(line)
    sys.stdout.flush()
    if line.startswith("@@ "):
        rep = json.loads(line[3:])
        pids.extend(rep.get("worker_pids", []))
        if rep.get("ready"):
            break
killed_at = None
if MODE == "sigkill":
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
primary_rc = proc.wait(timeout=10)
primary_gone_at = time.monotonic()
# Re-parented workers are our children now: reap them as they die.
statuses = {}
limit = time.monotonic() + 10
while len(statuses) < len(pids) and time.monotonic() < limit:
    for pid in pids:
        if pid in statuses:
            continue
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # not our child: the primary reaped it before it died
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                statuses[pid] = {"gone": time.monotonic(), "status": "reaped by the primary"}
            continue
        if got == pid:
            status = (["exit", os.WEXITSTATUS(status)] if os.WIFEXITED(status)
                      else ["signal", signal.Signals(os.WTERMSIG(status)).name])
            statuses[pid] = {"gone": time.monotonic(), "status": status}
    time.sleep(0.005)
start = killed_at if killed_at is not None else primary_gone_at
report(runner={
    "primary_rc": primary_rc,
    "workers": len(pids),
    "alive": [pid for pid in pids if pid not in statuses],
    "statuses": [statuses[pid]["status"] for pid in pids if pid in statuses],
    "max_seconds": max((statuses[p]["gone"] - start for p in statuses), default=None),
})
rest = proc.stdout.read()
sys.stdout.write(rest)
"""

PRIMARY = """
import http.server
import sys
import pycluster as cluster
from harness import report

if cluster.is_primary:
    N = WORKERS

    def on_listening(worker, address):
        if sum(w.state == "listening" for w in cluster.workers.values()) == N:
            report(worker_pids=[w.pid for w in cluster.workers.values()])
            report(ready=True)
            if MODE == "exit":
                sys.exit(0)

    cluster.on("listening", on_listening)
    for _ in range(N):
        cluster.fork()
    cluster.run()
else:
    http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def run(run_script, tmp_path, mode, workers):
    (tmp_path / "primary.py").write_text(f"WORKERS = {workers}\nMODE = {mode!r}\n" + PRIMARY)
    return run_script(f"MODE = {mode!r}\n" + RUNNER, timeout=30, cwd=tmp_path).report("runner")


def test_primary_exit_0_takes_its_worker_with_it(run_script, tmp_path):
    result = run(run_script, tmp_path, "exit", 1)
    assert result["primary_rc"] == 0
    assert result["workers"] == 1
    assert result["alive"] == [], "the worker outlived its primary"


def test_sigkilled_primary_workers_gone_within_one_second(run_script, tmp_path):
    result = run(run_script, tmp_path, "sigkill", 3)
    assert result["primary_rc"] == -9
    assert result["workers"] == 3
    assert result["alive"] == [], "workers outlived a SIGKILLed primary"
    assert result["max_seconds"] < 1.0, result
