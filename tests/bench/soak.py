"""Soak test under chaos (issue 7, item 4): a command, not a pytest test.

    python tests/bench/soak.py [--duration S | --quick] [--clients N] [--seed N]

Starts a master (the demo app ``pycluster.examples.hello:main``, policy rr, 4
workers, 127.0.0.1 only) and runs for ``--duration`` seconds (default 180;
``--quick``: 30):

* a client: ``--clients`` threads (default 6), each with one HTTP/1.1
  keep-alive connection doing GETs in a loop; every request and its outcome is
  counted; a response with ``Connection: close`` (a draining worker) ends the
  connection normally and the thread opens a new one;
* chaos: a rolling reload every 10 s, SIGKILL of a random worker every 3 s,
  and a scale to a random size between 2 and 6 every 5 s.

At the end the chaos stops, the cluster is scaled back to 4 workers and left
to settle (within 20 s: no reload running, 4 workers listening, no child of
the master that status does not list), the
client stops, and a report is printed: requests total / ok / failed, the
failures split into

* ``killed worker's own``: the request was on a keep-alive connection whose
  previous responses came from a worker that was SIGKILLed (its X-Pid);
* ``in flight during a kill, worker unknown``: the first request of a new
  connection (no X-Pid seen yet) that failed while a kill happened during the
  request;
* ``lost``: every other failure - lost outside the killed workers' own
  in-flight requests (target 0);

and the master's RSS and fd count at the start (4 workers, before traffic)
and at the end (4 workers, after the client stopped). Exit status 0 when
lost == 0, the fd count at the end equals the one at the start and the
cluster settled, else 1.
Every process it starts is stopped (its process group) before it exits.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKERS = 4
RELOAD_EVERY, KILL_EVERY, SCALE_EVERY = 10.0, 3.0, 5.0
SCALE_RANGE = (2, 6)
SETTLE = 20.0  # seconds the cluster has to settle at the end


# -- the master ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Master:
    def __init__(self, port: int, runtime: str, log_path: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCLUSTER_")}
        env["PYCLUSTER_RUNTIME_DIR"] = runtime
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_path
        self.control = os.path.join(runtime, "soak.sock")
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pycluster.cli", "run", "pycluster.examples.hello:main", "-w", str(WORKERS),
             "-b", f"127.0.0.1:{port}", "--policy", "rr", "-n", "soak", "--graceful-timeout", "5"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def request(self, obj: dict, timeout: float = 5.0) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.control)
            sock.sendall(json.dumps(obj).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data.splitlines()[0])

    def status(self) -> dict | None:
        try:
            reply = self.request({"cmd": "status"})
        except (OSError, ValueError, IndexError):
            return None
        return reply.get("result") if reply.get("ok") else None

    def wait(self, predicate, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return None
            st = self.status()
            if st is not None and predicate(st):
                return st
            time.sleep(0.05)
        return None

    def settled(self, n: int) -> bool:
        st = self.wait(lambda st: st["state"] == "running" and st["workers_wanted"] == n
                       and len(st["workers"]) == n and all(w["state"] == "listening" for w in st["workers"])
                       and sorted(live_children(self.pid)) == sorted(w["pid"] for w in st["workers"]), SETTLE)
        return st is not None

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(5)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # anything left in the group
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def live_children(pid: int) -> list[int]:
    pids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                pids.extend(int(x) for x in fh.read().split())
        except OSError:
            pass
    live = []
    for child in pids:
        try:
            with open(f"/proc/{child}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    live.append(child)
        except (OSError, IndexError):
            pass
    return live


def fds_at_rest(pid: int) -> int:
    """The smallest of 20 readings 10 ms apart (no control connection being closed)."""
    counts = []
    for _ in range(20):
        counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.01)
    return min(counts)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


# -- the client ---------------------------------------------------------------------------------

class Client:
    """Keep-alive GET loops; every outcome recorded with the pid of the connection's worker."""

    def __init__(self, port: int, threads: int, kills: dict[int, float]):
        self.port = port
        self.kills = kills  # pid -> monotonic time of its SIGKILL (written by the chaos)
        self.kill_times: list[float] = []
        self.lock = threading.Lock()
        self.ok = 0
        self.killed_own = 0
        self.killed_maybe = 0
        self.lost = 0
        self.lost_kinds: Counter = Counter()
        self.lost_examples: list[str] = []
        self.pending: list[tuple[float, float, str]] = []  # unknown-pid failures, judged at the end
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        for started, failed, what in self.pending:
            if any(started - 0.05 <= t <= failed for t in self.kill_times):
                self.killed_maybe += 1
            else:
                self._lost(what)

    def _lost(self, what: str) -> None:
        self.lost += 1
        self.lost_kinds[what.split("(", 1)[0]] += 1
        if len(self.lost_examples) < 10:
            self.lost_examples.append(what)

    def total(self) -> int:
        return self.ok + self.killed_own + self.killed_maybe + self.lost + len(self.pending)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        pid = None  # the worker behind this connection (X-Pid of its last response)
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                pid = None
            started = time.monotonic()
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                pid = int(resp.getheader("X-Pid", "0"))
                with self.lock:
                    self.ok += 1
                if resp.will_close:
                    conn.close()
                    conn = None
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is classified
                what = f"{exc!r} (worker pid {pid})"
                with self.lock:
                    if pid is not None and pid in self.kills:
                        self.killed_own += 1
                    elif pid is None:
                        self.pending.append((started, time.monotonic(), what))
                    else:
                        self._lost(what)
            conn.close()
            conn = None
        if conn is not None:
            conn.close()


# -- the chaos ----------------------------------------------------------------------------------

def chaos(master: Master, client: Client, duration: float, rng: random.Random) -> Counter:
    done: Counter = Counter()
    start = time.monotonic()
    next_reload, next_kill, next_scale = start + RELOAD_EVERY, start + KILL_EVERY, start + SCALE_EVERY
    while (now := time.monotonic()) < start + duration:
        if master.proc.poll() is not None:
            done["master died"] += 1
            break
        if now >= next_kill:
            next_kill += KILL_EVERY
            st = master.status()
            victims = [w["pid"] for w in (st or {}).get("workers", []) if w["pid"] and w["state"] == "listening"]
            if victims:
                pid = rng.choice(victims)
                with client.lock:
                    client.kills[pid] = time.monotonic()
                    client.kill_times.append(time.monotonic())
                try:
                    os.kill(pid, signal.SIGKILL)
                    done["kill"] += 1
                except ProcessLookupError:
                    done["kill: already gone"] += 1
        if now >= next_reload:
            next_reload += RELOAD_EVERY
            try:
                reply = master.request({"cmd": "reload", "wait": False})
            except OSError as exc:
                reply = {"ok": False, "error": {"code": repr(exc)}}
            done["reload" if reply.get("ok") else f"reload refused ({reply['error']['code']})"] += 1
        if now >= next_scale:
            next_scale += SCALE_EVERY
            target = rng.randint(*SCALE_RANGE)
            try:
                reply = master.request({"cmd": "scale", "workers": target})
            except OSError as exc:
                reply = {"ok": False, "error": {"code": repr(exc)}}
            done["scale" if reply.get("ok") else f"scale refused ({reply['error']['code']})"] += 1
        time.sleep(max(0.0, min(next_kill, next_reload, next_scale) - time.monotonic()))
    return done


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/bench/soak.py",
                                     description="Soak a pycluster master under chaos; report lost requests.")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos (default 180)")
    parser.add_argument("--quick", action="store_true", help="30 s of chaos")
    parser.add_argument("--clients", type=int, default=6, help="keep-alive client threads (default 6)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the chaos (default 1)")
    args = parser.parse_args(argv)
    duration = 30.0 if args.quick else args.duration

    tmp = tempfile.mkdtemp(prefix="pyc-soak-", dir="/tmp")
    runtime = os.path.join(tmp, "run")
    port = free_port()
    master = Master(port, runtime, os.path.join(tmp, "master.log"))
    kills: dict[int, float] = {}
    client = Client(port, args.clients, kills)
    try:
        if not master.settled(WORKERS):
            print(f"soak: the master never became ready; log: {master.log_path}", file=sys.stderr)
            return 1
        fds0, rss0 = fds_at_rest(master.pid), rss(master.pid)
        client.start()
        began = time.monotonic()
        done = chaos(master, client, duration, random.Random(args.seed))
        chaos_end = time.monotonic()
        master.request({"cmd": "scale", "workers": WORKERS})
        settled = master.settled(WORKERS)
        settle_s = time.monotonic() - chaos_end
        client.finish()
        elapsed = time.monotonic() - began
        alive = master.proc.poll() is None
        fds1 = fds_at_rest(master.pid) if alive else -1
        rss1 = rss(master.pid) if alive else 0
        final = master.status() or {}
        children = live_children(master.pid) if alive else []
    finally:
        client.stop.set()
        master.stop()

    failed = client.killed_own + client.killed_maybe + client.lost
    flat = fds1 <= fds0  # no growth (one fewer: a transient descriptor open at the start)
    print(f"# pycluster soak: {duration:g} s of chaos (+{settle_s:.1f} s to settle), {args.clients} keep-alive"
          f" clients, rr, demo app")
    print(f"chaos: {', '.join(f'{k} x{v}' for k, v in sorted(done.items()))}")
    print(f"requests: {client.total()} total ({client.total() / elapsed:.0f}/s), {client.ok} ok, {failed} failed")
    print(f"  killed worker's own in-flight requests: {client.killed_own}")
    print(f"  in flight during a kill, worker unknown (new connection): {client.killed_maybe}")
    print(f"  lost outside the killed workers' own in-flight requests: {client.lost} (target 0)")
    for kind, count in client.lost_kinds.most_common():
        print(f"    {count} x {kind}")
    for example in client.lost_examples[:5]:
        print(f"    e.g. {example}")
    print(f"master RSS: {rss0 / 2**20:.1f} MiB at start, {rss1 / 2**20:.1f} MiB at end"
          f" ({(rss1 - rss0) / 2**20:+.1f} MiB)")
    print(f"master fds: {fds0} at start, {fds1} at end ({'flat' if flat else 'NOT flat'}; {WORKERS} workers at"
          f" the start, {len(children)} children of the master at the end)")
    if not settled:
        listed = sorted(w["pid"] for w in final.get("workers", []))
        print(f"NOT settled within {SETTLE:g} s: status lists {len(listed)} workers"
              f" (generations {sorted({w['generation'] for w in final.get('workers', [])})}, master at"
              f" {final.get('generation')}, state {final.get('state')}); the master has {len(children)} live"
              f" children; not in status: {sorted(set(children) - set(listed))}")
    print(f"master log: {master.log_path}")
    ok = client.lost == 0 and flat and settled and alive
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
