"""How one master scales with the number of workers (issue 6, the scaling model).

    python tests/bench/bench_scaling.py [--workers 8,32,128] [--duration S] [--spawn]

For each worker count N (demo app, --preload unless --spawn, rr):
  * launch: `pycluster run` to all N workers listening;
  * master RSS and fds, total worker PSS / USS;
  * master CPU per connection under `wrk -t1 -c64 -H 'Connection: close'` for
    S seconds (the accept + hand-off path), and the connection rate reached;
  * `status` round trip over the control socket (its size grows with N);
  * a rolling reload of all N workers (`pycluster reload`, waits for the end).
Prints a Markdown table. The machine's cores bound the connection rate (wrk,
the master and the workers share them), so the column to extrapolate from is
the master's CPU per connection: one master core saturates at about
1 / (that many seconds) connections per second.

Installs nothing (wrk from Debian); loopback only; every process group it
starts is stopped; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_http import HOST, WRK, cli_env, free_port, precompile, run_wrk, stop_group  # noqa: E402


def request(runtime: str, name: str, obj: dict, timeout: float = 60) -> dict:
    from pycluster.control.client import request as send
    return send(os.path.join(runtime, f"{name}.sock"), obj, timeout=timeout)


def start(runtime: str, name: str, port: int, n: int, preload: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pycluster.cli", "run", "pycluster.examples.hello:main",
                             "-w", str(n), "-b", f"{HOST}:{port}", "-n", name, "--boot-timeout", "120",
                             *(["--preload"] if preload else [])],
                            env=cli_env(runtime), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_listening(proc: subprocess.Popen, runtime: str, name: str, n: int, timeout: float = 180) -> dict:
    """The status once all n workers listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = request(runtime, name, {"cmd": "status"}, timeout=5)["result"]
            if sum(w["state"] == "listening" for w in st["workers"]) >= n:
                return st
        except Exception:  # noqa: BLE001 - not answering yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{n} workers did not start")
        time.sleep(0.05)


def measure(n: int, duration: int, preload: bool) -> dict:
    runtime = tempfile.mkdtemp(prefix="pyc-scale-")
    port = free_port()
    name = f"s{port}"
    e = cli_env(runtime)
    t0 = time.monotonic()
    proc = start(runtime, name, port, n, preload)
    try:
        st = wait_listening(proc, runtime, name, n)
        launch = time.monotonic() - t0
        time.sleep(1.0)
        master = psutil.Process(proc.pid)
        pids = [w["pid"] for w in st["workers"]]
        pss = uss = 0
        for pid in pids:
            info = psutil.Process(pid).memory_full_info()
            pss += info.pss
            uss += info.uss
        rss, fds = master.memory_info().rss, master.num_fds()
        times = []
        for _ in range(20):
            t = time.monotonic()
            request(runtime, name, {"cmd": "status"})
            times.append((time.monotonic() - t) * 1000)
        c0 = sum(master.cpu_times()[:2])
        r = run_wrk(port, duration, close=True)
        cpu = sum(master.cpu_times()[:2]) - c0
        t = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pycluster.cli", "reload", "-n", name], env=e,
                              capture_output=True, text=True, timeout=600)
        reload_wall = time.monotonic() - t
        m = re.search(r"in ([\d.]+)s", done.stdout)
        return {"n": n, "launch_s": launch, "master_rss": rss, "master_fds": fds, "pss": pss, "uss": uss,
                "status_ms": statistics.median(times), "conns": r["requests"], "rps": r["rps"],
                "errors": r["errors"], "master_us_per_conn": cpu / r["requests"] * 1e6 if r["requests"] else None,
                "reload_s": float(m.group(1)) if m else reload_wall, "reload_rc": done.returncode}
    finally:
        stop_group(proc, 30)
        shutil.rmtree(runtime, ignore_errors=True)


def rate_curve(n: int, duration: int, preload: bool, levels: list[int]) -> list[dict]:
    """Master CPU per connection as the connection rate grows (wrk -c levels,
    Connection: close): at low rates every connection costs a loop wake-up;
    at high rates accept batches (and hand-off pairs) amortise it."""
    runtime = tempfile.mkdtemp(prefix="pyc-rate-")
    port = free_port()
    name = f"c{port}"
    proc = start(runtime, name, port, n, preload)
    try:
        wait_listening(proc, runtime, name, n)
        master = psutil.Process(proc.pid)
        rows = []
        for conns in levels:
            c0 = sum(master.cpu_times()[:2])
            r = run_wrk(port, duration, close=True, conns=conns)
            cpu = sum(master.cpu_times()[:2]) - c0
            rows.append({"conns": conns, "rps": r["rps"],
                         "us": cpu / r["requests"] * 1e6 if r["requests"] else None})
        return rows
    finally:
        stop_group(proc)
        shutil.rmtree(runtime, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="8,32,128")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--spawn", action="store_true", help="spawn mode instead of --preload")
    ap.add_argument("--rates", default="1,4,16,64", help="wrk -c levels for the connection-rate curve (8 workers)")
    args = ap.parse_args()
    if WRK is None:
        print("wrk is not installed (apt-get install wrk)")
        return 1
    precompile()
    rows = [measure(int(n), args.duration, not args.spawn) for n in args.workers.split(",")]
    mib = 2 ** 20
    print(f"Scaling ({'spawn' if args.spawn else '--preload'}, rr, demo app, {os.cpu_count()} cores; "
          f"wrk -t1 -c64 Connection: close for {args.duration} s)\n")
    print("| workers | launch (s) | master RSS | master fds | workers PSS (total / each) | workers USS total |"
          " status (ms) | conn/s | master CPU per conn | reload all (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = r["master_us_per_conn"]
        print(f"| {r['n']} | {r['launch_s']:.2f} | {r['master_rss'] / mib:.1f} MiB | {r['master_fds']} |"
              f" {r['pss'] / mib:.0f} / {r['pss'] / mib / r['n']:.1f} MiB | {r['uss'] / mib:.0f} MiB |"
              f" {r['status_ms']:.1f} | {r['rps']:.0f} | {per:.1f} µs |"
              f" {r['reload_s']:.2f}{'' if r['reload_rc'] == 0 else ' (failed)'} |")
    levels = [int(c) for c in args.rates.split(",") if c]
    if levels:
        curve = rate_curve(8, args.duration, not args.spawn, levels)
        print("\nMaster CPU per connection against the connection rate (8 workers, wrk -t1 -cN, Connection: close)\n")
        print("| wrk connections | conn/s | master CPU per conn | master CPU share of a core |")
        print("|---:|---:|---:|---:|")
        for row in curve:
            share = (row["rps"] or 0) * (row["us"] or 0) / 1e6
            print(f"| {row['conns']} | {row['rps']:.0f} | {row['us']:.1f} µs | {100 * share:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
