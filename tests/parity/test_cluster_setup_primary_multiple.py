"""Port of Node's test-cluster-setup-primary-multiple.js.

Python translation: three ``setup_primary(exec=...)`` calls 100 ms apart
(scheduled with ``loop.call_later`` on the cluster's loop, as Node uses
setTimeout). Exactly three 'setup' events fire, in order, each with the
matching exec. 'setup' is asynchronous: it never fires inside the
setup_primary() call, and the event has not been seen when the call returns.
One idle worker keeps run() going; the primary disconnects it after the
third event.
"""

from __future__ import annotations

SCRIPT = """
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    EXECS = ["py-next", "py-next-2", "py-next-3"]
    state = {"in_call": False}
    seen = []

    def on_setup(settings):
        seen.append({"exec": settings["exec"], "inside_call": state["in_call"]})
        if len(seen) == len(EXECS):
            report(seen=seen)
            cluster.disconnect()

    def call(exec_name):
        before = len(seen)
        state["in_call"] = True
        cluster.setup_primary(exec=exec_name)
        state["in_call"] = False
        report(sync_events=len(seen) - before)

    def start(worker):
        # The fork's own 'setup' was emitted before 'online'; count from here.
        cluster.on("setup", on_setup)
        for i, exec_name in enumerate(EXECS):
            cluster._engine.loop.call_later(0.1 * i, call, exec_name)

    cluster.once("online", must_call(start, 1))
    cluster.fork()
    report(primary_rc=cluster.run())
    report(total=len(seen))
"""


def test_each_setup_call_emits_once_asynchronously(run_script):
    res = run_script(SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("seen") == [{"exec": e, "inside_call": False} for e in ["py-next", "py-next-2", "py-next-3"]]
    assert res.all("sync_events") == [0, 0, 0]
    assert res.report("total") == 3
    assert res.report("primary_rc") == 0
