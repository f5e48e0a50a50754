"""Port of Node's test-cluster-fork-stdio.js.

Python translation: ``setup_primary(stdio=["pipe", "pipe", "pipe", "ipc",
"pipe"])``. In the primary ``worker.stdio[4]`` is a socket object; the
primary writes b"foobar" to it. The worker opens its fd 4 with
``os.fdopen(4)`` and echoes what it reads back through it. When the echo is
complete the primary disconnects the worker: the IPC channel still works
alongside the extra pipe, and 'exit' gives (0, None).
"""

from __future__ import annotations

SCRIPT = """
import os
import socket
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.setup_primary(stdio=["pipe", "pipe", "pipe", "ipc", "pipe"])
    worker = cluster.fork()
    pipe = worker.stdio[4]
    report(stdio4_type=type(pipe).__name__, stdio_len=len(worker.stdio))
    pipe.sendall(b"foobar")
    echo = bytearray()

    def readable():
        data = pipe.recv(64)
        echo.extend(data)
        if not data or len(echo) >= 6:
            cluster._engine.loop.remove_reader(pipe.fileno())
            report(echo=echo.decode())
            worker.disconnect()

    def on_exit(code, signal):
        report(exit=[code, signal], worker_stderr=worker.stderr.read().decode(errors="replace"))

    worker.on("online", must_call(lambda: cluster._engine.loop.add_reader(pipe.fileno(), readable), 1))
    worker.on("exit", must_call(on_exit, 1))
    report(primary_rc=cluster.run())
else:
    extra = os.fdopen(4, "r+b", buffering=0)
    got = b""
    while len(got) < 6:
        chunk = extra.read(6 - len(got))
        if not chunk:
            break
        got += chunk
    extra.write(got)
    cluster.worker.send({"echoed": len(got)})
"""


def test_extra_stdio_pipe_at_fd_4(run_script):
    res = run_script(SCRIPT, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.report("stdio4_type") == "socket"
    assert res.report("echo") == "foobar", res.report("worker_stderr")
    assert res.report("exit") == [0, None], res.report("worker_stderr")
    assert res.report("primary_rc") == 0
