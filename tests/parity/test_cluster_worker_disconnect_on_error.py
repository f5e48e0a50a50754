"""Port of Node's test/parallel/test-cluster-worker-disconnect-on-error.js.

Node (SCHED_NONE): the primary itself listens on port 0 and sends the port to
its worker; in the message handler the worker listens on that port, the
server emits 'error' and its handler calls ``cluster.worker.disconnect()``.
Asserts the message handler and the error handler each run once and the
primary's worker 'exit' fires (then the primary closes its server).

Python translation: the primary's private ``socket.create_server(("", 0))``
(not shared); the worker's message handler (pycluster's channel thread) binds
the same port, which raises ``OSError(EADDRINUSE)`` under SCHED_NONE; the
handler then calls ``cluster.worker.disconnect()``. Asserts the worker exits
``(0, None)`` with ``exited_after_disconnect`` True and 'disconnect' fired in the
primary, that the primary's own server still accepts a connection before it
closes it, and that the primary exits 0.
"""

from __future__ import annotations

SCRIPT = r"""
import errno
import socket

import pycluster as cluster
from harness import deadline, must_call, report

cluster.scheduling_policy = cluster.SCHED_NONE

if cluster.is_primary:
    deadline(20)
    server = socket.create_server(("", 0))
    port = server.getsockname()[1]
    worker = cluster.fork()
    worker.send({"port": port})

    def on_exit(code, signal):
        report(exit=[code, signal], exited_after_disconnect=worker.exited_after_disconnect)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            server.accept()[0].close()
        report(primary_server_alive=True)
        server.close()

    cluster.on("listening", must_call(None, 0, "listening"))
    worker.on("disconnect", must_call(None, 1, "disconnect"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
    report(primary_done=True)
else:
    def on_message(message):
        try:
            socket.create_server(("", message["port"]))
        except OSError as exc:
            report(worker_error=errno.errorcode.get(exc.errno, exc.errno))
            cluster.worker.disconnect()
        else:
            report(worker_error=None)

    cluster.worker.on("message", on_message)
"""


def test_cluster_worker_disconnect_on_error(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.all("worker_error") == ["EADDRINUSE"]
    assert result.report("exit") == [0, None]
    assert result.report("exited_after_disconnect") is True
    assert result.report("primary_server_alive") is True
    assert result.report("primary_done") is True
