"""Port of Node's test/parallel/test-cluster-eaccess.js.

Node: the cluster worker starts a *non-cluster* child process
(``child_process.fork``) that listens on a unix socket path; once the child is
listening, the worker listens on the same path through the cluster. Asserts the
worker's server gets 'error' with code EADDRINUSE (despite the test's name);
the worker tells the child to end and sends the error object to the primary,
which checks ``err.code`` and disconnects the worker.

Python translation: the worker starts a plain ``python -c`` child that binds
and listens on the path (it is not a pycluster worker: its environment has no
worker id) and says "ready"; the worker's own ``bind(path)`` is then shared
through the primary, which must fail with ``OSError(EADDRINUSE)`` and must not
unlink or steal the live child's socket (the child still accepts a connection
afterwards). The error crosses IPC in a serialisable form
``{code, errno, syscall}``; the primary checks the code and disconnects the
worker, which exits ``(0, None)``. Run under both policies.
"""

from __future__ import annotations

import errno

import pytest

SCRIPT = r"""
import errno
import os
import socket
import subprocess
import sys

import pycluster as cluster
from harness import deadline, must_call, report

PATH = os.path.abspath("eaccess.sock")

CHILD = '''
import os, socket, sys
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen()
print("ready", flush=True)
sys.stdin.readline()                     # "end" from the worker
server.settimeout(5)
conn, _ = server.accept()                # the worker's check that we still own the path
conn.sendall(b"child")
conn.close()
server.close()
os.unlink(path)
'''

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()

    def on_message(err):
        report(primary_got=err)
        worker.disconnect()

    def on_exit(code, signal):
        report(exit=[code, signal], path_left=os.path.exists(PATH))

    cluster.on("listening", must_call(None, 0, "listening"))
    worker.on("message", must_call(on_message, 1, "message"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    report(child_is_not_worker="PYCLUSTER_WORKER_ID" not in os.environ)
    child = subprocess.Popen([sys.executable, "-c", CHILD, PATH], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(PATH)
        server.listen()
    except OSError as exc:
        error = {"code": errno.errorcode.get(exc.errno), "errno": exc.errno, "syscall": "bind"}
    else:
        error = {"code": None, "errno": None, "syscall": None}
    child.stdin.write("end\n")
    child.stdin.flush()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    probe.connect(PATH)
    report(path_owner=probe.recv(16).decode())
    probe.close()
    report(child_exit=child.wait(timeout=10))
    cluster.worker.send(error)
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_eaccess(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("child_is_not_worker") is True
    assert result.report("primary_got") == {"code": "EADDRINUSE", "errno": errno.EADDRINUSE,
                                           "syscall": "bind"}
    assert result.report("path_owner") == "child", "the live child's socket path was taken over"
    assert result.report("child_exit") == 0
    assert result.report("exit") == [0, None]
    assert result.report("path_left") is False
