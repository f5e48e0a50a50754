"""The master as PID 1 (a container's init): orphaned grandchildren are
re-parented to it and must be reaped, not left as zombies (SPEC section 4).
Run for real in a new PID namespace (``unshare --pid --fork --mount-proc``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from support import child_env, kill_group

APP = """
    import asyncio, os, time
    import pycluster as cluster

    def orphan():
        # The child forks a grandchild and exits at once: the grandchild is
        # re-parented to PID 1 (the master), lives a second, then exits.
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                time.sleep(1.0)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)

    async def serve():
        async def hello(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.0 200 OK\\r\\n\\r\\nok")
            await writer.drain()
            writer.close()
        for sock in cluster.listeners():
            await asyncio.start_server(hello, sock=sock)
        await asyncio.Event().wait()

    def main():
        if cluster.worker.id == 1:
            orphan()
        asyncio.run(serve())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root for a PID namespace")
def test_master_as_pid1_reaps_orphans(tmp_path):
    (tmp_path / "pid1app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    env = child_env({"PYCLUSTER_RUNTIME_DIR": str(tmp_path / "run")})
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "pycluster.cli",
                             "run", "pid1app:main", "-w", "2", "-b", f"127.0.0.1:{port}", "-n", "pid1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        master = wait_for(lambda: (psutil.Process(proc.pid).children() or [None])[0], what="the master")

        def serving():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return s.recv(100).startswith(b"HTTP/1.0 200")
            except OSError:
                return False

        wait_for(serving, what="the cluster serving")

        def orphans():
            # Workers run a channel thread; the orphan (forked from a worker's
            # main thread) has only one.
            found = []
            for child in master.children():
                try:
                    if child.num_threads() == 1:
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
            return found

        orphan = wait_for(lambda: orphans(), what="the orphan re-parented to the master")[0]
        wait_for(lambda: not psutil.pid_exists(orphan.pid), timeout=5, what="the orphan reaped")
        zombies = [c for c in master.children() if c.status() == psutil.STATUS_ZOMBIE]
        assert zombies == []
        master.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
    finally:
        kill_group(proc)
        proc.wait(5)
