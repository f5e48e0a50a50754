"""Port of Node's test/sequential/test-cluster-port-reuse-between-workers.js.

Node (host '::', port 8000): worker 1 listens (server1); a second, concurrent
listen on the same port in worker 1 fails (it has handle index 1, a different
key, so the primary binds the port a second time and gets EADDRINUSE). Worker 1
closes server1; worker 2 is forked and listens on the port (succeeds); worker 1
then listens again (succeeds: it shares worker 2's handle); worker 1 closes it
and the primary kills both workers. No Worker 'error' event may fire.

Python translation: the same sequence on a fixed free port chosen by the
primary, with ``socket.create_server(("::", port), family=AF_INET6)`` in the
workers (their main thread waits for the primary's go-ahead on a queue fed by
the message handler). Asserts the second concurrent listen raises
``OSError(EADDRINUSE)``, worker 2's listen and worker 1's re-listen both
succeed on that port, the Worker 'error' events never fire, and ``kill()``
(SPEC: disconnect, then SIGTERM) ends both with ``(0, None)``.
"""

from __future__ import annotations

SCRIPT = r"""
import errno
import os
import queue
import socket

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    probe.bind(("::", 0))
    port = probe.getsockname()[1]
    probe.close()
    report(port=port)
    workers = {}

    def start(name):
        w = cluster.fork({"WORKER_NAME": name, "PORT": port})
        workers[name] = w
        w.on("error", must_call(None, 0, f"{name} error"))
        w.on("message", on_message)
        w.on("exit", must_call(lambda code, signal: report(**{f"{name}_exit": [code, signal],
                                                             f"{name}_ead": w.exited_after_disconnect}),
                               1, f"{name} exit"))

    def on_message(message):
        report(step=message)
        cmd = message["cmd"]
        if cmd == "WORKER1_SERVER1_CLOSED":
            start("worker2")
        elif cmd == "WORKER2_SERVER1_STARTED":
            workers["worker1"].send({"cmd": "WORKER2_SERVER1_STARTED"})
        elif cmd == "WORKER1_SERVER2_CLOSED":
            workers["worker1"].kill()
            workers["worker2"].kill()

    start("worker1")
    cluster.run()
else:
    name = os.environ["WORKER_NAME"]
    port = int(os.environ["PORT"])
    inbox = queue.Queue()
    cluster.worker.on("message", lambda message: inbox.put(message))

    def create_server():
        return socket.create_server(("::", port), family=socket.AF_INET6)

    server1 = create_server()
    if name == "worker2":
        cluster.worker.send({"cmd": "WORKER2_SERVER1_STARTED"})
    else:
        try:
            extra = create_server()
        except OSError as exc:
            report(second_listen_errno=exc.errno, eaddrinuse=exc.errno == errno.EADDRINUSE)
        else:
            report(second_listen_errno=None)
            extra.close()
        server1.close()
        cluster.worker.send({"cmd": "WORKER1_SERVER1_CLOSED"})
        message = inbox.get(timeout=10)
        assert message == {"cmd": "WORKER2_SERVER1_STARTED"}, message
        server2 = create_server()
        report(worker1_relisten_port=server2.getsockname()[1])
        server2.close()
        cluster.worker.send({"cmd": "WORKER1_SERVER2_CLOSED"})
"""


def test_cluster_port_reuse_between_workers(run_script):
    result = run_script(SCRIPT, timeout=30)
    assert result.returncode == 0, result.stderr
    port = result.report("port")
    assert result.report("eaddrinuse") is True, result.report("second_listen_errno")
    assert result.all("step") == [{"cmd": "WORKER1_SERVER1_CLOSED"}, {"cmd": "WORKER2_SERVER1_STARTED"},
                                  {"cmd": "WORKER1_SERVER2_CLOSED"}]
    assert result.report("worker1_relisten_port") == port
    assert result.report("worker1_exit") == [0, None]
    assert result.report("worker2_exit") == [0, None]
    assert result.report("worker1_ead") is True
    assert result.report("worker2_ead") is True
