"""Servers under test, wrk runs and HTTP probes for bench_engine.py.

Every server runs in its own session (start_new_session=True) and is stopped
by process group: SIGTERM, a bounded wait, then SIGKILL. All load goes to
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import psutil

HOST = "127.0.0.1"  # the only address any load is sent to
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LUA_COUNT = os.path.join(HERE, "bench_count_pid.lua")
WRK = shutil.which("wrk")
NODE = shutil.which("node")

LIVE: list[Server] = []  # every server started and not yet stopped (cleanup on exit)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(port: int, timeout: float = 2.0) -> tuple[int, int | None]:
    """One ``GET /`` on a new connection with ``Connection: close`` -> (status, X-Pid)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    if not lines or len(lines[0].split()) < 2:
        raise ConnectionError(f"no HTTP response ({len(data)} bytes)")
    xpid = None
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "x-pid":
            xpid = int(v.strip())
    return int(lines[0].split()[1]), xpid


def precompile() -> None:
    """Byte-compile pycluster first, as an installed wheel is: with
    PYTHONDONTWRITEBYTECODE set (or a read-only checkout), every process would
    otherwise compile the package again and the figures would measure that."""
    import compileall
    compileall.compile_dir(os.path.join(REPO, "src", "pycluster"), quiet=1)


def cli_env(runtime: str) -> dict[str, str]:
    """The environment of a `pycluster` CLI process using this checkout and a private runtime dir."""
    env = pycluster_env()
    env["PYCLUSTER_RUNTIME_DIR"] = runtime
    return env


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), wait, then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


def pycluster_env(policy: str | None = None) -> dict[str, str]:
    """The environment of a fresh pycluster primary running this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCLUSTER_")}
    src = os.path.join(REPO, "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    if policy:
        env["PYCLUSTER_SCHED_POLICY"] = policy
    return env


class Server:
    """A master process (launched directly, no shell) and its worker children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready: str, workers: int,
                 logdir: str, port: int):
        self.name, self.argv, self.env, self.workers, self.port = name, argv, env, workers, port
        self.ready_re = re.compile(ready)
        self.logpath = os.path.join(logdir, f"{name}-w{workers}-{port}.log")
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    def start(self, timeout: float = 60.0) -> Server:
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.append(self)
        self.ps = psutil.Process(self.proc.pid)
        self.wait_listening(self.workers, timeout)
        deadline = time.monotonic() + timeout
        while True:  # and the first 200 through the whole path
            try:
                if http_get(self.port, timeout=5.0)[0] == 200:
                    return self
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no 200 within {timeout} s (log: {self.logpath})")
            time.sleep(0.01)

    def listening_pids(self) -> set[int]:
        """Live workers that announced 'listening' (in the server's log)."""
        with open(self.logpath, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        announced = {int(m) for m in self.ready_re.findall(text)}
        return announced & set(self.worker_pids())

    def wait_listening(self, n: int, timeout: float) -> set[int]:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited rc={self.proc.returncode} (log: {self.logpath})")
            pids = self.listening_pids()
            if len(pids) >= n:
                return pids
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {len(pids)} of {n} workers listening after {timeout} s"
                                   f" (log: {self.logpath})")
            time.sleep(0.01)

    def children(self) -> list[psutil.Process]:
        try:
            return self.ps.children(recursive=True)
        except psutil.Error:
            return []

    def worker_pids(self) -> list[int]:
        out = []
        for c in self.children():
            try:
                if c.status() != psutil.STATUS_ZOMBIE:
                    out.append(c.pid)
            except psutil.Error:
                pass
        return sorted(out)

    def cpu_snapshot(self) -> dict[int, float]:
        """pid -> user+system CPU seconds of the master and every descendant."""
        out = {}
        for p in [self.ps] + self.children():
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def established(self) -> dict[int, int]:
        """pid -> ESTABLISHED TCP connections on the server port (master included)."""
        out = {}
        for p in [self.ps] + self.children():
            try:
                out[p.pid] = sum(1 for c in p.net_connections(kind="tcp")
                                 if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)
            except psutil.Error:
                pass
        return out

    def stop(self) -> None:
        """SIGTERM to the master (its graceful stop, as a user's Ctrl-C or kill),
        then SIGTERM to the whole process group, then SIGKILL to it; every wait bounded."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # session leader: its pid is the group id
        members = [self.ps] + self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _, alive = psutil.wait_procs([m for m in members if m.pid != self.proc.pid], timeout=3)
        if alive or self.proc.poll() is None:
            _killpg(pgid, signal.SIGTERM)
            _, alive = psutil.wait_procs(alive, timeout=5)
        _killpg(pgid, signal.SIGKILL)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        self.proc = None
        if self in LIVE:
            LIVE.remove(self)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    for s in list(LIVE):
        try:
            s.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"bench: stopping {s.name}: {exc}", file=sys.stderr)


# -- wrk ----------------------------------------------------------------------------
def _ms(v: str) -> float | None:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(text: str) -> dict:
    r: dict = {"rps": None, "requests": None, "p50_ms": None, "p99_ms": None, "non2xx": 0,
               "err_connect": 0, "err_read": 0, "err_write": 0, "err_timeout": 0, "xpid": None}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        r["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", text):
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M):
            r[key] = _ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        r["err_connect"], r["err_read"], r["err_write"], r["err_timeout"] = map(int, m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        r["non2xx"] = int(m.group(1))
    if m := re.search(r"^XPID_COUNTS (\{.*\})", text, re.M):
        r["xpid"] = json.loads(m.group(1))
    r["errors"] = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] + r["non2xx"]
    return r


def run_wrk(port: int, duration: int, *, close: bool = False, script: str | None = None,
            server: Server | None = None, midrun=None, conns: int = 64, threads: int = 1) -> dict:
    """``wrk -t{threads} -c64 -d{duration}s --latency`` against 127.0.0.1:port.

    With ``server``: its CPU seconds (master + workers) over the run, per
    request. ``midrun()`` is called once half-way through.
    """
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    if script:
        argv += ["-s", script]
    argv.append(f"http://{HOST}:{port}/")
    before = server.cpu_snapshot() if server else {}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mid = None
    try:
        if midrun is not None:
            time.sleep(duration / 2)
            mid = midrun()
        out, _ = p.communicate(timeout=duration + 30)
    except BaseException:
        p.kill()
        p.communicate(timeout=10)
        raise
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = parse_wrk(out)
    r["argv"] = argv
    r["wall_s"] = wall
    r["wrk_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    r["mid"] = mid
    if p.returncode != 0 or r["rps"] is None:
        r["wrk_output"] = out[-2000:]
    if server is not None:
        after = server.cpu_snapshot()
        master = server.proc.pid
        common = set(before) & set(after)
        r["master_cpu_s"] = after[master] - before[master] if master in common else 0.0
        r["workers_cpu_s"] = sum(after[q] - before[q] for q in common if q != master)
        r["server_cpu_s"] = r["master_cpu_s"] + r["workers_cpu_s"]
        if r["requests"]:
            r["server_us_per_req"] = r["server_cpu_s"] / r["requests"] * 1e6
            r["master_us_per_req"] = r["master_cpu_s"] / r["requests"] * 1e6
    return r


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def jain(xs) -> float | None:
    q = sum(x * x for x in xs)
    return sum(xs) ** 2 / (len(xs) * q) if q else None
