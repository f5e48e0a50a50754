"""Helpers for the ``pycluster run`` / control-verb tests (tests/integration/test_cli_*.py).

Every master runs as a real process in its own session (so its workers share
its process group) with ``PYCLUSTER_RUNTIME_DIR`` pointing at a private
directory; the fixtures kill every process group they started, even when the
test fails. Waits are condition polls with a bounded deadline, never sleeps
used as synchronisation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PYCLUSTERCTL = ROOT / "pyclusterctl"
POLL = 0.015  # seconds between two looks at a condition

if importlib.util.find_spec("pycluster.cli.__main__") is not None:
    CLI = [sys.executable, "-m", "pycluster.cli"]
else:  # `python -m pycluster.cli` needs a pycluster/cli/__main__.py; the entry point is the same function
    CLI = [sys.executable, "-c", "import sys; from pycluster.cli import main; sys.exit(main(prog_name='pycluster'))"]

READY = re.compile(r"ready: (\d+) workers?\b")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, details: Callable[[], str] = str) -> Any:
    """Poll ``predicate`` every POLL s until it returns something truthy; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{details()}")
        time.sleep(POLL)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` is no longer a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def exchange(path: str | os.PathLike, payload: bytes, *, timeout: float = 5.0, shut_write: bool = False,
             to_eof: bool = False, check_closed: bool = False) -> tuple[list[dict], bool]:
    """Send raw bytes to a control socket; return (the reply lines as JSON, closed-by-master?).

    Reads the first reply line (or everything up to EOF with ``to_eof``); a send the master cut
    short (it answered an oversized request and hung up) is not an error. ``check_closed`` waits
    up to 2 s after the reply to see whether the master closes the connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
        try:
            sock.sendall(payload)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        closed = False
        end = time.monotonic() + timeout
        while (to_eof or b"\n" not in data) and time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            data += chunk
        if check_closed and not to_eof and not closed:
            # Is the connection closed after the reply? (Error replies must close it.)
            sock.settimeout(2.0)
            try:
                closed = sock.recv(65536) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
    finally:
        sock.close()
    return [json.loads(line) for line in data.splitlines() if line.strip()], closed


def child_env(runtime_dir: str | os.PathLike, extra: dict | None = None) -> dict:
    """The environment of every pycluster process a test starts: no stray PYCLUSTER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCLUSTER_")}
    env["PYCLUSTER_RUNTIME_DIR"] = os.fspath(runtime_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ")  # a text log line's time


def untimed(line: str) -> str:
    """A text log line without its leading timestamp (what tests match on)."""
    return STAMP.sub("", line, count=1)


class Master:
    """A ``pycluster run`` process; its stdout and stderr are read line by line in threads.
    ``stdout`` holds the lines without their timestamps, ``raw_stdout`` as written."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict, name: str | None, runtime_dir: Path):
        self.args = args
        self.name = name
        self.control = Path(runtime_dir) / f"{name}.sock" if name else None
        self.stdout: list[str] = []
        self.raw_stdout: list[str] = []
        self.stderr: list[str] = []
        self.worker_bytes = 0  # bytes of "[worker N] ..." lines seen on stdout
        self.proc = subprocess.Popen([*CLI, "run", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr, False),
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def _pump(self, pipe, sink: list[str], count: bool) -> None:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if count:
                if len(self.raw_stdout) < 5000:
                    self.raw_stdout.append(line)
                line = untimed(line)
            if count and line.startswith("[worker "):
                self.worker_bytes += len(raw)
                if len(sink) > 5000 and "[pycluster]" not in line:
                    continue  # a flood: count it, don't keep it all
            sink.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        rc = self.proc.poll()
        return (f"--- pycluster run {' '.join(self.args)} (rc={rc})\n--- stdout\n" + "\n".join(self.stdout[-80:])
                + "\n--- stderr\n" + "\n".join(self.stderr[-80:]))

    def find_line(self, pattern: str | re.Pattern, stream: str = "stdout") -> re.Match | None:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in list(getattr(self, stream)):
            match = regex.search(line)
            if match:
                return match
        return None

    def wait_line(self, pattern: str | re.Pattern, timeout: float = 10, stream: str = "stdout") -> re.Match:
        return wait_until(lambda: self.find_line(pattern, stream) or self._ended(f"a line matching {pattern!r}"),
                          timeout, f"a {stream} line matching {pattern!r}", self.output)

    def _ended(self, what: str) -> None:
        if self.proc.poll() is not None:
            for thread in self._threads:
                thread.join(timeout=2)
            pytest.fail(f"the master exited (rc={self.proc.returncode}) before {what}\n{self.output()}")
        return None

    def wait_ready(self, timeout: float = 15) -> int:
        """Wait for the generation-complete line; return the number of workers it names."""
        return int(self.wait_line(READY, timeout).group(1))

    def request(self, obj: dict, timeout: float = 5.0) -> dict:
        replies, _ = exchange(self.control, json.dumps(obj).encode() + b"\n", timeout=timeout)
        assert replies, f"no reply to {obj}\n{self.output()}"
        return replies[0]

    def status(self) -> dict:
        reply = self.request({"cmd": "status"})
        assert reply.get("ok") is True, f"status failed: {reply}"
        return reply["result"]

    def wait_status(self, predicate: Callable[[dict], Any], timeout: float, what: str) -> dict:
        last: dict = {}

        def check():
            self._ended(what)
            last["status"] = self.status()
            return last["status"] if predicate(last["status"]) else None

        return wait_until(check, timeout, what, lambda: f"last status: {json.dumps(last.get('status'))}\n"
                          + self.output())

    def wait_exit(self, timeout: float = 10) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the master did not exit within {timeout}s\n{self.output()}")
        for thread in self._threads:
            thread.join(timeout=5)
        return rc

    def kill(self) -> None:
        """SIGKILL the master's whole process group (its workers included)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Cluster:
    """What the ``pyc`` fixture hands a test: start masters, run verbs, write app files."""

    def __init__(self, tmp_path: Path, runtime_dir: Path):
        self.dir = tmp_path
        self.runtime_dir = runtime_dir
        self.masters: list[Master] = []
        self.verbs: list[subprocess.Popen] = []

    def env(self, extra: dict | None = None) -> dict:
        return child_env(self.runtime_dir, extra)

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        return path

    def start(self, *args: str, name: str | None = "app", env: dict | None = None, cwd: Path | None = None) -> Master:
        argv = [str(a) for a in args]
        if name is not None:
            argv += ["-n", name]
        master = Master(argv, cwd=cwd or self.dir, env=self.env(env), name=name, runtime_dir=self.runtime_dir)
        self.masters.append(master)
        return master

    def cli_start(self, *args: str, env: dict | None = None, cwd: Path | None = None,
                  command: list[str] | None = None) -> subprocess.Popen:
        """Start a pycluster verb (text pipes, own session; killed at test end)."""
        argv = [*(command or CLI), *map(str, args)]
        proc = subprocess.Popen(argv, cwd=cwd or self.dir, env=self.env(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.verbs.append(proc)
        return proc

    def cli(self, *args: str, env: dict | None = None, timeout: float = 15, cwd: Path | None = None,
            command: list[str] | None = None) -> subprocess.CompletedProcess:
        """Run a pycluster verb to completion (killed, and the test failed, after ``timeout`` s)."""
        return self.finish(self.cli_start(*args, env=env, cwd=cwd, command=command), timeout)

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 15) -> subprocess.CompletedProcess:
        argv = proc.args
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{argv} did not finish in {timeout}s\n--- stdout\n{out}\n--- stderr\n{err}")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def run_to_end(self, *args: str, name: str | None = "app", env: dict | None = None, timeout: float = 15,
                   cwd: Path | None = None) -> Master:
        """Start a master that is expected to exit by itself; wait for it."""
        master = self.start(*args, name=name, env=env, cwd=cwd)
        master.wait_exit(timeout)
        return master

    def cleanup(self) -> None:
        for master in self.masters:
            master.kill()
        for proc in self.verbs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=5)


@pytest.fixture
def pyc(tmp_path):
    # A short private runtime dir: unix socket paths must stay under 108 bytes.
    runtime_dir = Path(tempfile.mkdtemp(prefix="pyc-rt-", dir="/tmp")) / "run"
    cluster = Cluster(tmp_path, runtime_dir)
    try:
        yield cluster
    finally:
        cluster.cleanup()
        shutil.rmtree(runtime_dir.parent, ignore_errors=True)


# -- apps the tests run ---------------------------------------------------------------------------

# Serves nothing, ignores SIGTERM: a graceful stop can only end it with SIGKILL.
STUBBORN_APP = """
    import signal
    import threading

    def main():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stubborn worker up", flush=True)
        threading.Event().wait()
"""

# Serves nothing; waits until SIGTERM (the worker default turns it into exit 0).
IDLE_APP = """
    import threading

    def main():
        print("idle worker up", flush=True)
        threading.Event().wait()
"""


# An asyncio app on the master's listeners; every GET answers the JSON object
# that `facts()` returns (Connection: close). `json_app` fills in the module-level
# lines (`prelude`) and the dict expression (`facts`).
_JSON_APP = """
    import asyncio
    import gc
    import json
    import os

    import pycluster as cluster

{prelude}

    def facts():
        return {facts}

    async def handle(reader, writer):
        while (await reader.readline()) not in (b"\\r\\n", b"\\n", b""):
            pass
        body = json.dumps(facts()).encode()
        writer.write(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: "
                     + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
        await writer.drain()
        writer.close()

    async def serve():
        servers = [await asyncio.start_server(handle, sock=s) for s in cluster.listeners()]
        await asyncio.Event().wait()

    def main():
        asyncio.run(serve())
"""


def json_app(facts: str, prelude: str = "") -> str:
    """The source of an app (for ``pyc.write``) answering ``facts`` (a dict expression) as JSON."""
    lines = textwrap.dedent(prelude).strip("\n").splitlines()
    return _JSON_APP.format(prelude="\n".join("    " + line if line else "" for line in lines), facts=facts)


def unused_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedLoad:
    """Client threads that each run ``self._run()`` until ``self.stop`` is set;
    a context manager (threads started on enter, stopped and joined on exit)."""

    def __init__(self, threads: int):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:  # pragma: no cover - subclasses define it
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def http_get(port: int, timeout: float = 3.0, path: str = "/") -> tuple[int, dict, bytes]:
    """GET ``path`` on 127.0.0.1:port -> (status, headers, body)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class InFlight:
    """``n`` slow GETs of ``path`` (each taking about ``seconds``), each on its own
    connection, started in threads; ``join()`` -> (status, body) or the exception, each."""

    def __init__(self, port: int, n: int, seconds: float, path: str = "/"):
        self.seconds = seconds
        self.results: list[tuple[int, bytes] | BaseException] = []
        self.threads = [threading.Thread(target=self._get, args=(port, path), daemon=True) for _ in range(n)]
        for thread in self.threads:
            thread.start()

    def _get(self, port: int, path: str) -> None:
        try:
            status, _headers, body = http_get(port, timeout=self.seconds + 10, path=path)
            self.results.append((status, body))
        except BaseException as exc:  # noqa: BLE001 - every failure is a result
            self.results.append(exc)

    def join(self) -> list[tuple[int, bytes] | BaseException]:
        for thread in self.threads:
            thread.join(timeout=self.seconds + 15)
        return self.results
