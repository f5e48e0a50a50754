"""Port of Node's test/parallel/test-cluster-worker-no-exit.js.

The primary runs a TCP server and tells the worker its port; the worker
opens a *client* connection to it. On that connection the primary closes
its server and calls ``worker.disconnect()``; later it destroys the
connection. The worker's 'exit' must come after the connection was
destroyed: a disconnect does not kill a worker that still has work in hand
(an outbound client connection).

Python translation: a Python process does not end by itself when idle, so
SPEC section 2 has a disconnected worker sent SIGTERM; a plain worker exits
0 on it, while an app with its own SIGTERM handler shuts down its own way.
The worker here is such an app: its handler lets the work in hand (reading
the client connection to its end) finish, and tells the primary over that
connection that it got SIGTERM and is still alive. Node waits one second
after 'disconnect' before destroying the connection; here the primary
destroys it once it has seen both its 'disconnect' event and that notice,
so no sleep is needed. Checked: the worker's exit comes after the destroy,
the worker saw the end of its connection, and it exits ``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import queue
import signal
import socket
import threading

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    disconnected = threading.Event()
    state = {"destroyed": False}
    worker = cluster.fork()

    def on_connection():
        server.close()
        worker.disconnect()

    def serve():
        conn, _ = server.accept()
        cluster._engine.loop.call_soon_threadsafe(on_connection)
        conn.settimeout(10)
        notice = conn.recv(64)
        report(notice=notice.decode(), disconnected_first=disconnected.wait(10))
        state["destroyed"] = True
        conn.close()

    def on_exit(code, sig):
        report(exit=[code, sig], destroyed_before_exit=state["destroyed"])

    threading.Thread(target=serve).start()
    worker.on("online", must_call(lambda: worker.send({"port": port}), 1))
    worker.on("disconnect", must_call(disconnected.set, 1))
    worker.on("exit", must_call(on_exit, 1))
    report(rc=cluster.run())
else:
    ports = queue.Queue()
    cluster.worker.on("message", lambda msg: ports.put(msg["port"]))
    conn = socket.socket()
    conn.settimeout(10)

    def on_sigterm(signum, frame):
        conn.sendall(b"sigterm")

    # installed before connecting: the primary disconnects as soon as we connect
    signal.signal(signal.SIGTERM, on_sigterm)
    conn.connect(("127.0.0.1", ports.get(timeout=10)))
    while conn.recv(64):
        pass
    report(worker_saw_eof=True)
"""


def test_cluster_worker_no_exit(run_script):
    res = run_script(SCRIPT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.report("notice") == "sigterm"
    assert res.report("disconnected_first") is True
    assert res.report("worker_saw_eof") is True
    assert res.report("destroyed_before_exit") is True
    assert res.report("exit") == [0, None]
    assert res.report("rc") == 0
