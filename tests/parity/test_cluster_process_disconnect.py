"""Port of Node's test/parallel/test-cluster-process-disconnect.js.

Once its server listens on port 0, the worker closes its raw IPC channel
(Node's ``process.disconnect()``, not ``cluster.worker.disconnect()``).
``exited_after_disconnect`` was never set, so this is an unexpected
disconnect and the worker must exit with code 0 by itself even though its
server is still open: 'exit' gives ``(0, None)``.

Python translation: the raw close is ``cluster.worker._channel.close_threadsafe()``
(documented in the test API); the server is ``socketserver.TCPServer`` on
127.0.0.1 port 0 whose ``serve_forever()`` would otherwise run for ever.
"""

from __future__ import annotations

SCRIPT = r"""
import socketserver

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    worker.on("listening", must_call(lambda address: None, 1))

    def on_exit(code, sig):
        report(exit=[code, sig], exited_after_disconnect=worker.exited_after_disconnect)

    worker.on("disconnect", must_call(lambda: None, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    cluster.worker._channel.close_threadsafe()
    server.serve_forever()
"""


def test_cluster_process_disconnect(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("exit") == [0, None]
    assert res.report("exited_after_disconnect") is False
    assert res.report("rc") == 0
