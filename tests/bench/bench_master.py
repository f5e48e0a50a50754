"""The master's numbers (issue 3, SPEC section 7), measured on this machine.

    python tests/bench/bench_master.py [--quick] [--trials N] [--idle S]

Prints a Markdown table: launch to first 200 (4 workers) and replacement after
kill -9 of a worker (a new pid serving), in spawn and --preload mode; master
RSS, master idle CPU, the `pycluster status --json` round trip as a whole
process; the workers' memory in both modes (PSS of 4 demo workers, USS of 8
workers of apps/heavy.py, which builds ~50 MB of objects at import). Installs nothing;
loopback only; every process it starts is stopped (process group).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_http import precompile, stop_group  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODES = ("spawn", "preload")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, timeout: float = 1.0) -> tuple[int, int] | None:
    """(status, X-Pid) of one GET, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    try:
        status = int(data.split(b" ", 2)[1])
        pid = int(data.split(b"X-Pid: ", 1)[1].split(b"\r\n", 1)[0])
        return status, pid
    except (IndexError, ValueError):
        return None


def start(port: int, name: str, runtime: str, workers: int = 4, *, preload: bool = False,
          app: str = "pycluster.examples.hello:main") -> subprocess.Popen:
    e = env()
    e["PYCLUSTER_RUNTIME_DIR"] = runtime
    e["PYTHONPATH"] = os.path.join(HERE, "apps") + os.pathsep + e["PYTHONPATH"]
    return subprocess.Popen([sys.executable, "-m", "pycluster.cli", "run", app,
                             "-w", str(workers), "-b", f"127.0.0.1:{port}", "-n", name,
                             *(["--preload"] if preload else [])],
                            env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def status(runtime: str, name: str) -> dict:
    from pycluster.control.client import request
    return request(os.path.join(runtime, f"{name}.sock"), {"cmd": "status"}, timeout=5)["result"]


def serving_pids(runtime: str, name: str, n: int, timeout: float = 15) -> set:
    """The pids of the n workers, once all are listening (from status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws = status(runtime, name)["workers"]
        except Exception:  # noqa: BLE001 - not answering yet
            ws = []
        pids = {w["pid"] for w in ws if w.get("state") == "listening" and w.get("pid")}
        if len(pids) >= n:
            return pids
        time.sleep(0.01)
    raise RuntimeError("workers did not start")


def launch_to_200(runtime: str, preload: bool) -> float:
    port = free_port()
    t0 = time.monotonic()
    proc = start(port, f"l{port}", runtime, preload=preload)
    try:
        while time.monotonic() - t0 < 10:
            r = get(port, 0.5)
            if r and r[0] == 200:
                return (time.monotonic() - t0) * 1000
            time.sleep(0.002)
        return float("nan")
    finally:
        stop_group(proc, 10)


def kill9_trials(runtime: str, trials: int, preload: bool) -> list:
    port = free_port()
    name = f"k{port}"
    proc = start(port, name, runtime, preload=preload)
    out = []
    try:
        for _ in range(trials):
            before = serving_pids(runtime, name, 4)
            time.sleep(0.3)  # let the replacement of the last trial settle
            victim = min(before)
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            served = float("nan")
            while time.monotonic() - t0 < 5:
                r = get(port, 0.5)
                if r and r[1] not in before:
                    served = (time.monotonic() - t0) * 1000
                    break
            out.append(served)
    finally:
        stop_group(proc, 10)
    return out


def memory(runtime: str, preload: bool, app: str, workers: int) -> dict:
    """Total USS and PSS of the workers (idle, after 100 requests), and the master's RSS."""
    port = free_port()
    name = f"m{port}"
    proc = start(port, name, runtime, workers, preload=preload, app=app)
    try:
        pids = serving_pids(runtime, name, workers, timeout=60)
        for _ in range(100):
            get(port)
        time.sleep(1.0)
        uss = pss = 0
        for pid in pids:
            info = psutil.Process(pid).memory_full_info()
            uss += info.uss
            pss += info.pss
        return {"uss": uss, "pss": pss, "master_rss": psutil.Process(proc.pid).memory_info().rss}
    finally:
        stop_group(proc, 10)


def steady(runtime: str, idle: float) -> dict:
    port = free_port()
    name = f"s{port}"
    proc = start(port, name, runtime)
    try:
        master = psutil.Process(proc.pid)
        serving_pids(runtime, name, 4)
        for _ in range(200):
            get(port)
        time.sleep(1.0)
        rss = master.memory_info().rss
        c0 = sum(master.cpu_times()[:2])
        time.sleep(idle)
        c1 = sum(master.cpu_times()[:2])
        e = env()
        e["PYCLUSTER_RUNTIME_DIR"] = runtime
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "pycluster.cli", "status", "--json", "-n", name], env=e,
                           capture_output=True, check=True)
            times.append((time.monotonic() - t0) * 1000)
        return {"rss": rss, "idle_cpu": 100 * (c1 - c0) / idle, "status_ms": statistics.median(times)}
    finally:
        stop_group(proc, 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 trials, 5 s idle window")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--idle", type=float, default=None)
    args = ap.parse_args()
    precompile()
    trials = args.trials or (3 if args.quick else 5)
    idle = args.idle or (5.0 if args.quick else 30.0)
    runtime = tempfile.mkdtemp(prefix="pyc-bench-")
    mib = 2 ** 20
    try:
        launches = {m: [launch_to_200(runtime, m == "preload") for _ in range(trials)] for m in MODES}
        kills = {m: kill9_trials(runtime, trials, m == "preload") for m in MODES}
        mem = {(m, app): memory(runtime, m == "preload", app, n)
               for m in MODES for app, n in (("pycluster.examples.hello:main", 4), ("heavy:main", 8))}
        st = steady(runtime, idle)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)

    def trial_row(label, values, target):
        return (label, f"{statistics.median(values):.0f} ms", " ".join(f"{x:.0f}" for x in values), target)

    heavy_cut = 1 - mem[("preload", "heavy:main")]["uss"] / mem[("spawn", "heavy:main")]["uss"]
    demo = "pycluster.examples.hello:main"
    rows = [
        trial_row("launch to first 200, 4 workers (spawn)", launches["spawn"],
                  "<= 150 ms (gunicorn 63, Node 140, uvicorn 201)"),
        trial_row("launch to first 200, 4 workers (--preload)", launches["preload"], "<= 70 ms"),
        trial_row("replacement after kill -9 (spawn)", kills["spawn"],
                  "<= 150 ms (gunicorn 10, Node 78, uvicorn 506)"),
        trial_row("replacement after kill -9 (--preload)", kills["preload"], "<= 30 ms"),
        ("master RSS, 4 workers", f"{st['rss'] / mib:.1f} MiB", "", "< 30 MB (gunicorn 24, Node 45)"),
        (f"master idle CPU over {idle:g} s", f"{st['idle_cpu']:.3f} %", "", "< 0.1 % of a core"),
        ("`pycluster status --json`, whole process", f"{st['status_ms']:.0f} ms", "median of 5", "< 250 ms"),
        ("PSS of 4 idle demo workers (spawn / --preload)",
         f"{mem[('spawn', demo)]['pss'] / mib:.1f} / {mem[('preload', demo)]['pss'] / mib:.1f} MiB", "",
         "preload <= 36 MiB (gunicorn)"),
        ("USS of 8 workers of a 50 MB app (spawn / --preload)",
         f"{mem[('spawn', 'heavy:main')]['uss'] / mib:.0f} / {mem[('preload', 'heavy:main')]['uss'] / mib:.0f} MiB",
         f"{100 * heavy_cut:.0f}% less", ">= 40% less with --preload"),
    ]
    print("| measurement | result | trials | target (anchors) |")
    print("|---|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
