"""Port of Node's test/parallel/test-cluster-worker-disconnect.js.

The worker runs an HTTP server on 127.0.0.1 port 0 and registers a
``cluster.worker`` 'disconnect' handler that exits with 42. On 'listening'
the primary calls ``worker.disconnect()``, which returns the worker. Cluster
'disconnect' and 'exit' fire once each; worker 'disconnect' fires with
``exited_after_disconnect is True`` and state 'disconnected'; worker 'exit'
gets code 42, which proves the worker-side 'disconnect' event fired inside
the worker; the pid is gone at 'exit'.

Python translation: Node's ``process.exit(42)`` in the worker handler is
``sys.exit(42)`` (an exception escaping a worker handler ends the worker
with that code). Beyond Node, SPEC section 2 ("the worker stops accepting
on every shared listener") is checked from the outside: after worker
'disconnect' the shared port refuses connections, because the primary
closed the listener when its last worker left. The probe runs in a thread,
never on the primary's loop.
"""

from __future__ import annotations

SCRIPT = r"""
import http.server
import os
import socket
import sys
import threading

import pycluster as cluster
from harness import deadline, must_call, report


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def probe(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        report(refused_after_disconnect=True)
    except OSError as exc:
        report(refused_after_disconnect=repr(exc))
    else:
        report(refused_after_disconnect=False)


if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    ports = []

    def on_listening(address):
        ports.append(address.port)
        report(disconnect_returns_worker=worker.disconnect() is worker)

    def on_disconnect():
        report(at_disconnect=[worker.exited_after_disconnect, str(worker.state)])
        threading.Thread(target=probe, args=(ports[0],)).start()

    def on_exit(code, sig):
        report(exit=[code, sig], died=not alive(worker.pid))

    worker.on("listening", must_call(on_listening, 1))
    worker.on("disconnect", must_call(on_disconnect, 1))
    worker.on("exit", must_call(on_exit, 1))
    cluster.on("disconnect", must_call(lambda w: None, 1, name="cluster disconnect"))
    cluster.on("exit", must_call(lambda w, c, s: None, 1, name="cluster exit"))
    report(rc=cluster.run())
else:
    cluster.worker.on("disconnect", lambda: sys.exit(42))
    http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler).serve_forever()
"""


def test_cluster_worker_disconnect(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("disconnect_returns_worker") is True
    assert res.report("at_disconnect") == [True, "disconnected"]
    assert res.report("exit") == [42, None]
    assert res.report("died") is True
    assert res.report("refused_after_disconnect") is True
    assert res.report("rc") == 0
