"""Port of Node's test/parallel/test-cluster-invalid-message.js.

On 'online' the primary sends a *user* message shaped like an internal
cluster message (Node: ``{cmd: 'NODE_CLUSTER', ack: -1}``) and disconnects
in the send callback. Neither side may crash or be confused: the worker
exits ``(0, None)``.

Python translation: pycluster's internal messages are dicts with an
``act`` key (``{"act": "ack", "ack": seq}``, ``{"act": "disconnect"}``, ...),
so the look-alikes use that shape, with a bogus sequence number. Beyond Node,
both directions are checked: the worker receives the look-alikes unchanged
as ordinary user messages and echoes them back, the primary receives the
echoes unchanged as user messages (cluster 'message'), and only then
disconnects in the send callback. A look-alike of the worker's
"exited after disconnect" notice must not mark the exit voluntary: the
flag stays None until the primary's own ``disconnect()``.
"""

from __future__ import annotations

SCRIPT = r"""
import pycluster as cluster
from harness import deadline, must_call, report

LOOK_ALIKES = [
    {"act": "ack", "ack": -1},
    {"act": "disconnect", "signal": True},
    {"act": "exited_after_disconnect", "seq": 1},
    {"act": "online"},
]

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    echoes = []

    def on_online():
        for msg in LOOK_ALIKES:
            worker.send(msg)

    def on_message(w, msg, handle):
        echoes.append(msg)
        if len(echoes) == len(LOOK_ALIKES):
            report(echoes=echoes, flag_before_disconnect=worker.exited_after_disconnect,
                   state=str(worker.state))
            # Node's own look-alike; the worker does not echo it
            worker.send({"cmd": "NODE_CLUSTER", "ack": -1}, callback=lambda err: worker.disconnect())

    worker.on("online", must_call(on_online, 1))
    cluster.on("message", must_call(on_message, len(LOOK_ALIKES)))
    worker.on("exit", must_call(lambda code, sig: report(exit=[code, sig]), 1))
    report(rc=cluster.run())
else:
    def on_message(msg):
        report(worker_got=msg)
        if "act" in msg:
            cluster.worker.send(msg)

    cluster.worker.on("message", on_message)
"""

LOOK_ALIKES = [
    {"act": "ack", "ack": -1},
    {"act": "disconnect", "signal": True},
    {"act": "exited_after_disconnect", "seq": 1},
    {"act": "online"},
]


def test_cluster_invalid_message(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.all("worker_got") == LOOK_ALIKES + [{"cmd": "NODE_CLUSTER", "ack": -1}]
    assert res.report("echoes") == LOOK_ALIKES
    assert res.report("flag_before_disconnect") is None
    assert res.report("state") == "online"
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
