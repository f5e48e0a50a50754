"""Port of Node's test/parallel/test-cluster-rr-handle-close.js.

Node (SCHED_RR): after its server is listening the worker unrefs its IPC
channel and closes the server; with nothing left to keep it alive the worker
exits by itself with code 0.

Python translation: a Python worker does not exit just because nothing is left
to do (it stays in the cluster until disconnected, see API.md), so the
transferable assertion is: closing an RR server releases everything the server
held, and a worker whose main program then has nothing else to do is
disconnected and exits 0. The worker listens on port 0 through the primary,
closes the server and its main program ends. The primary then checks that its
RR listener was closed with the worker's last server (a connection to the port
is refused, SPEC section 2) and disconnects the worker, either from the primary
(``worker.disconnect()``) or from the worker itself
(``cluster.worker.disconnect()``). 'exit' must be ``(0, None)`` with
``exited_after_disconnect`` True.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import errno
import os
import socket

import pycluster as cluster
from harness import deadline, must_call, report

WHO = os.environ["WHO"]

if cluster.is_primary:
    cluster.scheduling_policy = cluster.SCHED_RR
    deadline(20)
    worker = cluster.fork()

    def on_message(message):
        port = message["closed"]
        probe = socket.socket()
        probe.settimeout(5)
        try:
            probe.connect(("127.0.0.1", port))
            report(after_close="connected")
        except OSError as exc:
            report(after_close=errno.errorcode.get(exc.errno, exc.errno))
        finally:
            probe.close()
        if WHO == "primary":
            worker.disconnect()

    def on_exit(code, signal):
        report(exit=[code, signal], exited_after_disconnect=worker.exited_after_disconnect)

    worker.on("listening", must_call(None, 1, "listening"))
    worker.on("message", must_call(on_message, 1, "message"))
    worker.on("disconnect", must_call(None, 1, "disconnect"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    cluster.worker.send({"closed": port})
    if WHO == "worker":
        cluster.worker.disconnect()
"""


@pytest.mark.parametrize("who", ["primary", "worker"])
def test_cluster_rr_handle_close(run_script, who):
    result = run_script(SCRIPT, env={"WHO": who}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("after_close") == "ECONNREFUSED"
    assert result.report("exit") == [0, None]
    assert result.report("exited_after_disconnect") is True
