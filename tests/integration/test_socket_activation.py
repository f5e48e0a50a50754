"""systemd socket activation with an app that binds the activated address
itself (not ``cluster.listeners()``), through the real ``systemd-socket-activate``.

The master maps each inherited listener to its address, so a worker's bind of
127.0.0.1:P (or of the activated unix path) shares the inherited socket instead
of failing with EADDRINUSE; under rr and none both workers serve, and
``status`` shows the one listener.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from cli_support import CLI, pyc, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                                 reason="no systemd-socket-activate")]

# Binds ADDRESS itself, as an app run without pycluster would (asyncio for TCP;
# socketserver for a unix path: asyncio's create_unix_server unlinks the path
# first, which would remove systemd's socket file). Answers its pid, one line.
TCP_APP = """
    import asyncio
    import os

    async def handle(reader, writer):
        await reader.readline()
        writer.write(f"{{os.getpid()}}\\n".encode())
        await writer.drain()
        writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", {port})
        print("bound", server.sockets[0].getsockname(), flush=True)
        await asyncio.Event().wait()

    def main():
        asyncio.run(serve())
"""

UNIX_APP = """
    import os
    import socketserver

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            self.rfile.readline()
            self.wfile.write(f"{{os.getpid()}}\\n".encode())

    def main():
        with socketserver.UnixStreamServer({path!r}, Handler) as server:
            print("bound", server.socket.getsockname(), flush=True)
            server.serve_forever()
"""


def _activate(pyc, listen: str, policy: str) -> object:
    env = pyc.env()
    setenv = []
    for key in ("PYCLUSTER_RUNTIME_DIR", "PYTHONPATH", "PYTHONUNBUFFERED", "PATH", "HOME"):
        if key in env:
            setenv += ["-E", f"{key}={env[key]}"]
    return pyc.cli_start("-l", listen, *setenv, *CLI, "run", "app:main", "-w", "2", "--policy", policy,
                         "-n", "app", command=[shutil.which("systemd-socket-activate")])


def _ask(family: int, address: object) -> int | None:
    """One request; the pid that answered, or None if it failed."""
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(address)
            sock.sendall(b"hi\n")
            line = sock.makefile("rb").readline()
        return int(line) if line.strip().isdigit() else None
    except OSError:
        return None


def _connects(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def _both_workers_serve(pyc, activator, family: int, address: object) -> dict:
    """Requests until two different workers answered; then the status, which
    must name exactly those two workers and the activated listener."""
    seen: set[int] = set()

    def two_pids():
        if activator.poll() is not None:
            raise AssertionError(f"the activator exited ({activator.returncode}): {pyc.finish(activator)}")
        pid = _ask(family, address)
        if pid is not None:
            seen.add(pid)
        return len(seen) >= 2

    # The first connection starts the service; the activated socket queues it meanwhile.
    wait_until(two_pids, 20, "answers from two workers", lambda: f"pids {seen}")
    wait_until((pyc.runtime_dir / "app.sock").exists, 10, "the master's control socket")
    st = pyc.cli("status", "-n", "app", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["pid"] == activator.pid
    assert {w["pid"] for w in status["workers"]} == seen, (status["workers"], seen)
    assert len(status["listeners"]) == 1, status["listeners"]
    return status


def _stop(pyc, activator) -> str:
    assert pyc.cli("stop", "-n", "app").returncode == 0
    done = pyc.finish(activator, 15)
    assert done.returncode == 0, done
    out = done.stdout + done.stderr
    assert "EADDRINUSE" not in out and "in use" not in out, out
    assert out.count("bound") == 2, out  # each worker bound once: none failed and was replaced
    return out


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_activated_tcp_address_bound_by_the_app(pyc, free_port, policy):
    pyc.write("app.py", TCP_APP.format(port=free_port))
    activator = _activate(pyc, f"127.0.0.1:{free_port}", policy)
    status = _both_workers_serve(pyc, activator, socket.AF_INET, ("127.0.0.1", free_port))
    assert status["listeners"][0].get("port") == free_port, status["listeners"]
    out = _stop(pyc, activator)
    assert f"('127.0.0.1', {free_port})" in out, out  # the app's getsockname is the address it bound


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_activated_unix_path_bound_by_the_app(pyc, policy):
    path = str(pyc.runtime_dir.parent / "app-activated.sock")  # short: under 108 bytes
    pyc.write("app.py", UNIX_APP.format(path=path))
    activator = _activate(pyc, path, policy)
    _both_workers_serve(pyc, activator, socket.AF_UNIX, path)
    out = _stop(pyc, activator)
    assert f"bound {path}" in out, out


def test_app_binding_another_address_on_the_activated_port_is_told_why(pyc, free_port):
    """Only the exact address is shared: the app binding the wildcard while
    systemd passed 127.0.0.1:P gets EADDRINUSE naming the inherited listener."""
    pyc.write("app.py", TCP_APP.format(port=free_port).replace('"127.0.0.1"', '"0.0.0.0"'))
    activator = _activate(pyc, f"127.0.0.1:{free_port}", "rr")
    # The first connection starts the service; the master gives up when its first worker fails.
    wait_until(lambda: activator.poll() is not None or _connects(("127.0.0.1", free_port)), 10,
               "the activation socket")
    done = pyc.finish(activator, 20)
    assert done.returncode != 0
    assert f"0.0.0.0:{free_port} is in use by the primary's listener 127.0.0.1:{free_port} (fd://3)" \
        in done.stdout + done.stderr, done
