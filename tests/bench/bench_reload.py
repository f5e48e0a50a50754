"""Rolling reload under load (issue 4, SPEC section 7): errors seen by wrk.

    python tests/bench/bench_reload.py [--quick] [--runs N] [--workers N]

For each policy, N runs of: start `pycluster run pycluster.examples.hello:main
-w 8` on 127.0.0.1, run `wrk -t1 -c32` with keep-alive for D seconds, and
half-way through run `pycluster reload` (it waits until the new generation is
complete). Reports wrk's socket errors (connect, read, write, timeout) and
non-2xx responses per run, and the reload's duration. `--close` sends
`Connection: close` on every request instead (a new connection per request:
what exposes connections left in a closing listener's accept queue).

SO_REUSEPORT is measured twice, with `net.ipv4.tcp_migrate_req` 0 and 1: each
run happens inside a fresh network namespace (`unshare -n`, needs root) where
that sysctl is set and loopback brought up, so the machine's own setting is
never touched. Without root those rows are skipped with a note.

Installs nothing (wrk from Debian); loopback only; every process it starts is
stopped (process group); every wait bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_http import HOST, WRK, cli_env, free_port, precompile, run_wrk, stop_group  # noqa: E402


def one_run(policy: str, workers: int, duration: int, close: bool = False) -> dict:
    runtime = tempfile.mkdtemp(prefix="pyc-reload-")
    port = free_port()
    name = f"r{port}"
    e = cli_env(runtime)
    log = open(os.path.join(runtime, "master.log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "pycluster.cli", "run", "pycluster.examples.hello:main",
                             "-w", str(workers), "-b", f"{HOST}:{port}", "--policy", policy, "-n", name],
                            env=e, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not re.search(r"ready: \d+ workers?\b", open(log.name).read()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the master did not become ready:\n{open(log.name).read()[-2000:]}")
            time.sleep(0.02)

        def reload() -> dict:
            t0 = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "pycluster.cli", "reload", "-n", name], env=e,
                                  capture_output=True, text=True, timeout=120)
            took = time.monotonic() - t0
            m = re.search(r"in ([\d.]+)s", done.stdout)
            return {"rc": done.returncode, "wall_s": took, "reload_s": float(m.group(1)) if m else None,
                    "output": (done.stdout + done.stderr)[-500:]}

        r = run_wrk(port, duration, conns=32, midrun=reload, close=close)
        return {"policy": policy, "load": "close" if close else "keep-alive", "requests": r["requests"], "rps": r["rps"], "connect": r["err_connect"],
                "read": r["err_read"], "write": r["err_write"], "timeout": r["err_timeout"],
                "non2xx": r["non2xx"], "errors": r["errors"], "reload": r["mid"]}
    finally:
        stop_group(proc)
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)


def in_namespace(migrate: int, args: argparse.Namespace) -> list[dict]:
    """The reuseport runs inside `unshare -n` with tcp_migrate_req set there."""
    out = tempfile.NamedTemporaryFile(prefix="pyc-reload-", suffix=".json", delete=False)
    out.close()
    inner = (f"ip link set lo up && sysctl -q -w net.ipv4.tcp_migrate_req={migrate} && "
             f"exec {sys.executable} {os.path.abspath(__file__)} --inner reuseport --runs {args.runs} "
             f"--workers {args.workers} --duration {args.duration} --json-out {out.name}"
             f"{' --close' if args.close else ''}")
    subprocess.run(["unshare", "-n", "sh", "-c", inner], check=True, timeout=args.runs * (args.duration + 90))
    with open(out.name) as fh:
        rows = json.load(fh)
    os.unlink(out.name)
    for row in rows:
        row["policy"] = f"reuseport, tcp_migrate_req={migrate}"
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 4 s per policy")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--duration", type=int, default=None, help="seconds of wrk per run (reload half-way)")
    ap.add_argument("--policies", default="rr,none,reuseport")
    ap.add_argument("--close", action="store_true",
                    help="connection-per-request load (Connection: close) instead of keep-alive")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (4 if args.quick else 8)
    if WRK is None:
        print("wrk is not installed (apt-get install wrk): nothing to measure")
        return 1
    precompile()
    if args.inner:
        rows = [one_run(args.inner, args.workers, args.duration, args.close) for _ in range(args.runs)]
        with open(args.json_out, "w") as fh:
            json.dump(rows, fh)
        return 0
    rows: list[dict] = []
    notes = []
    for policy in args.policies.split(","):
        if policy != "reuseport":
            rows += [one_run(policy, args.workers, args.duration, args.close) for _ in range(args.runs)]
        elif os.geteuid() != 0 or not shutil.which("unshare"):
            notes.append("reuseport rows skipped: they need root and unshare (a private network namespace)")
        else:
            rows += in_namespace(0, args) + in_namespace(1, args)
    load = "connection-per-request (-H 'Connection: close')" if args.close else "keep-alive"
    print(f"Rolling reload of {args.workers} workers under `wrk -t1 -c32 -d{args.duration}s` {load} "
          f"(reload half-way), {args.runs} run(s) per policy, {os.cpu_count()} cores\n")
    print("| policy | run | requests | connect | read | write | timeout | non-2xx | reload (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, row in enumerate(rows):
        rl = row["reload"] or {}
        took = rl.get("reload_s") if rl.get("rc") == 0 else f"failed: {rl.get('output', '')!r}"
        print(f"| {row['policy']} | {i % args.runs + 1} | {row['requests']} | {row['connect']} | {row['read']} |"
              f" {row['write']} | {row['timeout']} | {row['non2xx']} | {took} |")
    by_policy: dict[str, list] = {}
    for row in rows:
        by_policy.setdefault(row["policy"], []).append(row)
    print()
    for policy, rs in by_policy.items():
        times = [r["reload"]["reload_s"] for r in rs if r["reload"] and r["reload"].get("reload_s")]
        print(f"{policy}: errors per run {[r['errors'] for r in rs]}, reload "
              f"{statistics.median(times) if times else float('nan'):.2f} s (median)")
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
