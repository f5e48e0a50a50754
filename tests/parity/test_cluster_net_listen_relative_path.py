"""Port of Node's test/parallel/test-cluster-net-listen-relative-path.js.

Node: the primary ``chdir``s to a temp dir and creates ``./unix-socket-dir``;
the worker ``chdir``s into it and listens on a *relative* socket name chosen so
that the absolute path is longer than 100 bytes (beyond what ``sun_path``
holds). Asserts the listen works, the socket file exists relative to the
worker's cwd, the worker (raw ``process.disconnect()``) exits 0, and the socket
file is removed once the worker has exited.

Python translation: the same layout in the test's temporary directory (the
primary's cwd); the name is ``"A" * 82`` as in Node and the absolute path must
exceed the 108-byte ``sun_path`` limit, so only a path relative to the
primary's cwd can be bound: the worker's relative path is resolved against the
*worker's* cwd and the primary binds the shortest equivalent path. Asserts the
bind+listen succeed, ``os.path.exists(name)`` in the worker's cwd, a
'listening' event with ``address_type -1``, the worker's raw channel close
(``cluster.worker._channel.close_threadsafe()``) ends it ``(0, None)``, and at
'exit' the socket file is gone (the primary unlinks a unix listener it created
when it closes it). Run under both policies.
"""

from __future__ import annotations

import pytest

SCRIPT = r"""
import os
import socket

import pycluster as cluster
from harness import deadline, must_call, report

SOCKET_DIR = "./unix-socket-dir"
SOCKET_NAME = "A" * (100 - len(SOCKET_DIR) - 1)

if cluster.is_primary:
    deadline(20)
    absolute = os.path.abspath(os.path.join(SOCKET_DIR, SOCKET_NAME))
    report(absolute_length=len(absolute.encode()))
    os.mkdir(SOCKET_DIR)
    worker = cluster.fork()

    def on_exit(code, signal):
        report(exit=[code, signal], socket_left=os.path.exists(os.path.join(SOCKET_DIR, SOCKET_NAME)))

    worker.on("listening", must_call(lambda a: report(address_type=a.address_type), 1, "listening"))
    worker.on("exit", must_call(on_exit, 1, "exit"))
    cluster.run()
else:
    os.chdir(SOCKET_DIR)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET_NAME)
    server.listen()
    report(created_in_cwd=os.path.exists(SOCKET_NAME))
    cluster.worker._channel.close_threadsafe()
"""


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_cluster_net_listen_relative_path(run_script, policy):
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": policy}, timeout=30)
    assert result.report("absolute_length") > 108, "the test needs a path beyond the sun_path limit"
    assert result.returncode == 0, result.stderr
    assert result.report("created_in_cwd") is True
    assert result.report("address_type") == -1
    assert result.report("exit") == [0, None]
    assert result.report("socket_left") is False, "the socket file must be removed after the worker exits"
