"""Port of Node's test/parallel/test-cluster-shared-handle-bind-privileged-port.js.

Node (SCHED_NONE): skipped when running as root or when port 42 is not
privileged (``/proc/sys/net/ipv4/ip_unprivileged_port_start <= 42``). The worker
listens on port 42; asserts 'error' with code EACCES, no 'listening', and the
worker disconnects (raw ``process.disconnect()``) and exits with code 0.

Python translation: the same skip conditions (checked with ``pytest.skip``;
this suite usually runs as root, where the test is skipped). The worker's
``socket.create_server(("", 42))`` must raise ``OSError`` with
``errno.EACCES`` (the primary's failed bind, relayed with its errno), no
'listening' event reaches the primary, and after the raw channel close
(``cluster.worker._channel.close_threadsafe()``) the worker exits ``(0, None)``.
"""

from __future__ import annotations

import os

import pytest

POLICY = "none"

SCRIPT = r"""
import errno
import socket

import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    worker = cluster.fork()
    cluster.on("listening", must_call(None, 0, "listening"))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1, "exit"))
    cluster.run()
else:
    try:
        socket.create_server(("", 42))
    except OSError as exc:
        report(worker_error=errno.errorcode.get(exc.errno, exc.errno))
    else:
        report(worker_error=None)
    cluster.worker._channel.close_threadsafe()
"""


def skip_unless_port_42_is_privileged():
    if os.geteuid() == 0:
        pytest.skip("must not run as root: root may bind port 42")
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            start = int(f.read())
    except (OSError, ValueError):
        return  # no such knob: ports below 1024 are privileged
    if start <= 42:
        pytest.skip(f"port 42 is unprivileged (ip_unprivileged_port_start={start})")


def test_cluster_shared_handle_bind_privileged_port(run_script):
    skip_unless_port_42_is_privileged()
    result = run_script(SCRIPT, env={"PYCLUSTER_SCHED_POLICY": POLICY}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("worker_error") == "EACCES"
    assert result.report("exit") == [0, None]
