"""The IPC channel against a misbehaving worker, and the worker's fd hygiene
(issue 2): garbage or an oversized frame from a worker becomes an 'error'
event on that Worker and closes its channel - the worker then exits 0 (it
never outlives its channel) and the primary keeps running; a worker holds
only its own descriptors, none of the primary's or its siblings'."""

from __future__ import annotations

import pytest

GARBAGE = r"""
import os
import struct
import sys

import pycluster as cluster
from harness import deadline, must_call, report

BAD = {
    "kind": struct.pack("!IBBH", 5, 7, 0, 0) + b"hello",        # unknown frame kind
    "json": struct.pack("!IBBH", 5, 0, 0, 0) + b"{oops",        # not JSON
    "oversized": struct.pack("!IBBH", 65 * 1024 * 1024, 0, 0, 0),  # over the 64 MiB limit
}[os.environ["BAD"]]

if cluster.is_primary:
    deadline(20)
    bad = cluster.fork({"ROLE": "bad"})
    errors = []

    def on_error(exc):
        errors.append(type(exc).__name__)

    def on_exit(code, signal):
        report(bad_exit=[code, signal], errors=errors)
        good = cluster.fork({"ROLE": "good"})  # the primary still works
        good.on("message", must_call(lambda msg: (report(good=msg), good.disconnect()), 1, "good message"))

    bad.on("error", on_error)
    bad.on("exit", must_call(on_exit, 1, "bad exit"))
    report(run=cluster.run())
elif os.environ["ROLE"] == "bad":
    os.write(cluster.worker._channel.sock.fileno(), BAD)
    import time
    time.sleep(30)  # the primary closes the channel: we exit 0 long before this
else:
    cluster.worker.send("hello")
"""


@pytest.mark.parametrize("bad", ["kind", "json", "oversized"])
def test_garbage_from_a_worker_is_an_error_event_and_closes_only_its_channel(run_script, bad):
    result = run_script(GARBAGE, env={"BAD": bad}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.report("errors") == ["ProtocolError"]
    assert result.report("bad_exit") == [0, None]
    assert result.report("good") == "hello"
    assert result.report("run") == 0


HYGIENE = r"""
import os
import socket
import tempfile

import pycluster as cluster
from harness import deadline, report

if cluster.is_primary:
    deadline(20)
    private_listener = socket.create_server(("127.0.0.1", 0))
    private_file = tempfile.TemporaryFile()
    workers = [cluster.fork(), cluster.fork()]
    fds = {}

    def on_message(worker, msg):
        fds[worker.id] = msg
        if len(fds) == 2:
            report(worker_fds=fds, primary_inodes=[os.fstat(private_listener.fileno()).st_ino,
                                                   os.fstat(private_file.fileno()).st_ino])
            cluster.disconnect()

    cluster.on("message", on_message)
    cluster.run()
else:
    entries = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            entries[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the directory listing's own fd
    cluster.worker.send({"fds": entries, "channel": cluster.worker._channel.sock.fileno()})
"""


def test_a_worker_holds_only_its_own_descriptors(run_script):
    result = run_script(HYGIENE, timeout=30)
    assert result.returncode == 0, result.stderr
    primary_inodes = {str(i) for i in result.report("primary_inodes")}
    worker_fds = result.report("worker_fds")
    channel_inodes = set()
    for wid, info in worker_fds.items():
        fds = info["fds"]
        for fd, target in fds.items():
            for inode in primary_inodes:
                assert f"[{inode}]" not in target, f"worker {wid} inherited the primary's {target} as fd {fd}"
        channel = fds[str(info["channel"])]
        channel_inodes.add(channel)
        sockets = {fd: t for fd, t in fds.items() if t.startswith("socket:")}
        # The channel is its only socket (its loop has a pipe and an epoll fd besides):
        assert set(sockets) == {str(info["channel"])}, f"worker {wid} holds extra sockets: {sockets}"
    assert len(channel_inodes) == 2, "each worker has its own channel, not a sibling's"
