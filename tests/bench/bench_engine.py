"""pycluster engine benchmark (SPEC section 7), peers measured in the same run.

    python tests/bench/bench_engine.py [--quick] [--duration S] [--runs N] [--json FILE]
                                       [--anchors DIR] [--only ipc,http,balance,kill]

Prints ONE Markdown table:

1. IPC: primary<->worker round trip of a small message (median of 2000),
   one-way small-message throughput both ways, a 1 MiB message round trip.
2. fork() -> 'online' and fork() -> 'listening' (median of 20 forks).
3. wrk -t1 -c64 on 127.0.0.1 against 2 workers of the demo server
   (pycluster.examples.hello) under rr / none / reuseport, 2 independent
   SO_REUSEPORT processes serving the same HelloServer (bench_reuseport_pair.py),
   and Node's cluster (rr / none, anchors/apps/node-cluster.js): keep-alive and
   Connection: close req/s, p99, server CPU us/req (master + workers, psutil),
   master CPU us/req, keep-alive connection split per worker, errors; then
   SPEC 7's ratios. All these servers run at once and their wrk runs are
   interleaved (round i: each keep-alive, then each Connection: close), so
   background load hits them alike; ratios are medians of per-round ratios.
4. Balance over 8 workers, Connection: close, per-X-Pid counts from a wrk Lua
   script (bench_count_pid.lua): max share and Jain index.
5. Kill trials: rr, 4 workers, 4 probes in flight, SIGKILL one worker; probes
   that fail or hang > 2 s, split into those sent before the victim was dead
   (it may have accepted them: any server loses those) and after (only the
   hand-off path can lose those: the target is 0).

--quick: 2 s wrk runs, one run each (under 3 minutes); default: 5 s runs,
medians of 3. Installs nothing: rows that need wrk or node are skipped with a
note when those are missing. Every server runs in its own session; it is
stopped by SIGTERM to its master (a graceful stop), then SIGTERM and SIGKILL to
its whole process group, every wait bounded. Load goes to 127.0.0.1 only.
wrk shares the machine's cores with the servers: compare CPU us/req and ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
from bench_http import (
    HERE,
    HOST,
    LUA_COUNT,
    NODE,
    REPO,
    WRK,
    Server,
    free_port,
    http_get,
    jain,
    med,
    precompile,
    pycluster_env,
    run_wrk,
    stop_all,
)

PYC_READY = r"\(pid (\d+)\) listening"
NODE_READY = r"LISTENING (\d+)"
TARGET_LABELS = {
    "pyc-rr": "pycluster rr", "pyc-none": "pycluster none", "pyc-reuseport": "pycluster reuseport",
    "indep-reuseport": "2 independent SO_REUSEPORT procs", "node-rr": "Node cluster rr",
    "node-none": "Node cluster none",
}


class Bench:
    def __init__(self, args):
        self.a = args
        self.notes: list[str] = []
        self.res: dict = {}
        self.logdir = args.logdir
        os.makedirs(self.logdir, exist_ok=True)
        self.node_app = os.path.join(args.anchors, "apps", "node-cluster.js")
        self.have_node = bool(NODE) and os.path.isfile(self.node_app)
        if not WRK:
            self.notes.append("wrk not found (Debian package `wrk`): sections 3, 4 skipped")
        if not NODE:
            self.notes.append("node not found: Node cluster rows skipped")
        elif not os.path.isfile(self.node_app):
            self.notes.append(f"{self.node_app} missing (--anchors DIR): Node cluster rows skipped")

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- servers ---------------------------------------------------------------------
    def server(self, name: str, workers: int) -> Server:
        port = free_port()
        py = sys.executable
        if name.startswith("pyc-"):
            argv = [py, "-m", "pycluster.examples.hello", "--workers", str(workers), "--port", str(port),
                    "--host", HOST]
            return Server(name, argv, pycluster_env(name[4:]), PYC_READY, workers, self.logdir, port)
        if name == "indep-reuseport":
            argv = [py, os.path.join(HERE, "bench_reuseport_pair.py"), "--workers", str(workers),
                    "--port", str(port), "--host", HOST]
            return Server(name, argv, pycluster_env(), PYC_READY, workers, self.logdir, port)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYCLUSTER_", "NODE_CLUSTER_"))}
        env.update(WORKERS=str(workers), PORT=str(port), HOST=HOST, NODE_CLUSTER_SCHED_POLICY=name[5:])
        return Server(name, [NODE, self.node_app], env, NODE_READY, workers, self.logdir, port)

    def names(self, names: list[str]) -> list[str]:
        return [n for n in names if self.have_node or not n.startswith("node-")]

    # -- 1 + 2: IPC and fork -------------------------------------------------------------
    def ipc(self) -> None:
        argv = [sys.executable, os.path.join(HERE, "bench_ipc.py"), "--roundtrips", "2000",
                "--forks", "20", "--oneway", "10000" if self.a.quick else "20000",
                "--oneway-reps", "1" if self.a.quick else "3", "--big-reps", "5" if self.a.quick else "10"]
        self.say("ipc: " + " ".join(argv[1:]))
        log = open(os.path.join(self.logdir, "ipc.log"), "w")
        p = subprocess.Popen(argv, env=pycluster_env("rr"), cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                             text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            out = ""
            self.notes.append("IPC benchmark timed out (150 s)")
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            p.wait(timeout=10)
            log.close()
        for line in out.splitlines():
            if line.startswith("IPC_RESULT "):
                self.res["ipc"] = json.loads(line[len("IPC_RESULT "):])
        if "ipc" not in self.res:
            self.notes.append(f"IPC benchmark failed (rc={p.returncode}; see {log.name})")
        else:
            self.say("ipc: " + json.dumps({k: v for k, v in self.res["ipc"].items() if not k.endswith("runs")}))

    # -- 3: throughput, 2 workers ----------------------------------------------------------
    def throughput(self) -> None:
        """All servers up at once, runs interleaved (round i: every target keep-alive,
        then every target Connection: close), so background load hits them alike."""
        d = self.a.duration
        out = self.res.setdefault("throughput", {})
        servers: dict[str, Server] = {}
        try:
            for name in self.names(["pyc-rr", "pyc-none", "pyc-reuseport", "indep-reuseport", "node-rr",
                                    "node-none"]):
                srv = self.server(name, 2)
                try:
                    servers[name] = srv.start()
                except RuntimeError as exc:
                    self.notes.append(f"{name}: {exc}")
                    srv.stop()
            for srv in servers.values():
                run_wrk(srv.port, 1)  # warm-up, discarded
            runs = {name: {"ka": [], "close": []} for name in servers}
            for i in range(self.a.runs):
                for mode in ("ka", "close"):
                    for name, srv in servers.items():
                        r = run_wrk(srv.port, d, close=(mode == "close"), server=srv,
                                    midrun=srv.established if mode == "ka" else None)
                        if r["mid"] is not None:
                            m = srv.proc.pid
                            r["split"] = {"master": r["mid"].get(m, 0),
                                          "workers": sorted((v for k, v in r["mid"].items() if k != m),
                                                            reverse=True)}
                        runs[name][mode].append(r)
                        self.say(f"{name} {mode} run{i}: {_fmt(r.get('rps'))} req/s p99={r['p99_ms']} ms "
                                 f"cpu={_fmt(r.get('server_us_per_req'), '%.1f')} us/req "
                                 f"master={_fmt(r.get('master_us_per_req'), '%.1f')} err={r['errors']}"
                                 + (f" split={r['split']}" if r.get("split") else ""))
            for name in servers:
                out[name] = {mode: summarize(rs) for mode, rs in runs[name].items()}
        finally:
            for srv in servers.values():
                srv.stop()

    # -- 4: balance, 8 workers -------------------------------------------------------------
    def balance(self) -> None:
        out = self.res.setdefault("balance", {})
        for name in self.names(["pyc-rr", "pyc-none", "node-rr", "node-none"]):
            srv = self.server(name, 8)
            try:
                srv.start()
                run_wrk(srv.port, 1, close=True)  # warm-up
                runs = []
                for i in range(self.a.runs):
                    pids = srv.worker_pids()
                    r = run_wrk(srv.port, self.a.duration, close=True, script=LUA_COUNT, server=srv)
                    counts = {str(p): 0 for p in pids}
                    counts.update(r["xpid"] or {})
                    xs = sorted(counts.values(), reverse=True)
                    total = sum(xs) or 1
                    r.update(per_worker=xs, max_share=xs[0] / total, min_share=xs[-1] / total, jain=jain(xs))
                    runs.append(r)
                    self.say(f"{name} balance run{i}: {_fmt(r['rps'])} req/s jain={_fmt(r['jain'], '%.3f')} "
                             f"max_share={r['max_share']:.3f} {xs}")
                out[name] = {"rps": med([r["rps"] for r in runs]), "jain": med([r["jain"] for r in runs]),
                             "max_share": med([r["max_share"] for r in runs]),
                             "min_share": med([r["min_share"] for r in runs]),
                             "errors": [r["errors"] for r in runs], "per_worker_last": runs[-1]["per_worker"],
                             "runs": runs}
            except RuntimeError as exc:
                self.notes.append(f"{name} (balance): {exc}")
            finally:
                srv.stop()

    # -- 5: kill trials ----------------------------------------------------------------------
    def kill_trials(self) -> None:
        srv = self.server("pyc-rr", 4)
        trials = []
        try:
            srv.start()
            for i in range(self.a.kill_trials):
                srv.wait_listening(4, 30)
                t = kill_trial(srv)
                trials.append(t)
                self.say(f"kill trial {i}: victim {t['victim']} probes={t['probes']} lost={t['lost']} "
                         f"(after death {t['lost_after_death']}, dead after {t['dead_ms']:.1f} ms) "
                         f"hung={t['hung']} kinds={t['failure_kinds']} serving_again={_fmt(t['serving_ms'], '%.0f')} ms")
            srv.wait_listening(4, 30)
        except RuntimeError as exc:
            self.notes.append(f"kill trials: {exc}")
        finally:
            srv.stop()
        if trials:
            self.res["kill"] = {"trials": trials, "lost": [t["lost"] for t in trials],
                                "hung": [t["hung"] for t in trials],
                                "serving_ms_median": med([t["serving_ms"] for t in trials])}


def kill_trial(srv: Server, probes: int = 4, timeout: float = 2.0) -> dict:
    """Keep `probes` GETs in flight, SIGKILL the lowest-pid worker, go on until a
    new worker has answered (at most 5 s), count probes that failed or hung."""
    old = set(srv.worker_pids())
    victim = min(old)
    results: list[tuple] = []
    stop = threading.Event()

    def prober() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            xpid = None
            try:
                status, xpid = http_get(srv.port, timeout=timeout)
                kind = "ok" if status == 200 else f"http-{status}"
            except TimeoutError:
                kind = "hung"
            except (OSError, ValueError) as exc:
                kind = type(exc).__name__
            results.append((t0, time.monotonic(), kind, xpid))

    threads = [threading.Thread(target=prober, daemon=True) for _ in range(probes)]
    for th in threads:
        th.start()
    time.sleep(0.3)  # load before the kill: hand-offs are in flight when it lands
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    deadline = t_kill + 5.0
    t_dead = _wait_dead(victim, deadline)
    serving = None
    while serving is None and time.monotonic() < deadline:
        for (_t0, t1, kind, xpid) in list(results):
            if kind == "ok" and xpid is not None and xpid not in old:
                serving = t1 if serving is None else min(serving, t1)
        time.sleep(0.005)
    time.sleep(0.2)  # a little load after the replacement is serving
    stop.set()
    for th in threads:
        th.join(timeout + 3)
    bad = [r for r in results if r[2] != "ok"]
    # A probe sent before the victim was dead may have been accepted by it and
    # die with it (any server loses those); one sent after can only be lost by
    # the hand-off path (a connection given to, or left with, a dead worker).
    after = [r for r in bad if r[0] >= t_dead]
    return {"victim": victim, "probes": len(results), "lost": len(bad), "lost_after_death": len(after),
            "lost_in_flight_at_kill": len(bad) - len(after),
            "hung": sum(1 for r in bad if r[2] == "hung"),
            "failure_kinds": sorted({r[2] for r in bad}),
            "failed_started_ms_after_kill": [round((r[0] - t_kill) * 1000, 1) for r in bad],
            "dead_ms": (t_dead - t_kill) * 1000,
            "serving_ms": (serving - t_kill) * 1000 if serving is not None else None}


def _wait_dead(pid: int, deadline: float) -> float:
    """When `pid` is a zombie or gone (SIGKILL is not instant under load)."""
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.0005)
    return time.monotonic()


def summarize(rs: list[dict]) -> dict:
    return {
        "rps": med([r["rps"] for r in rs]), "rps_runs": [r["rps"] for r in rs],
        "p99_ms": med([r["p99_ms"] for r in rs]),
        "server_us_per_req": med([r.get("server_us_per_req") for r in rs]),
        "master_us_per_req": med([r.get("master_us_per_req") for r in rs]),
        "wrk_cores": med([r["wrk_cpu_s"] / r["wall_s"] for r in rs]),
        "errors": [r["errors"] for r in rs],
        "splits": [r.get("split") for r in rs if r.get("split")],
        "runs": rs,
    }


# -- the table ------------------------------------------------------------------------------
def _fmt(x, fmt: str = "%.0f") -> str:
    return "-" if x is None else fmt % x


def _ok(value, good) -> str:
    if value is None:
        return "n/a"
    return "yes" if good(value) else "**NO**"


def paired_ratio(a_runs, b_runs) -> tuple[float | None, list[float]]:
    """Median over rounds of a/b, each round's runs back to back (same background load)."""
    xs = [round(a / b, 2) for a, b in zip(a_runs or [], b_runs or []) if a and b]
    return med(xs), xs


def table(res: dict, args) -> str:
    rows: list[tuple] = []  # section, measurement, result, p99, server us, master us, detail, errors, target, ok
    ipc = res.get("ipc")
    if ipc:
        rows.append(("1 IPC", "round trip, small message", f"{ipc['rtt_us_median']:.1f} µs median",
                     "", "", "", f"p90 {ipc['rtt_us_p90']:.1f}, p99 {ipc['rtt_us_p99']:.1f} µs; n={ipc['rtt_count']}",
                     "", "", ""))
        for key, label in (("p2w", "one-way small msgs, primary→worker"), ("w2p", "one-way small msgs, worker→primary")):
            v = ipc[f"{key}_msgs_per_s"]
            rows.append(("1 IPC", label, f"{v:,.0f} msgs/s", "", "", "", f"{ipc['oneway_n']} msgs per burst, "
                         f"median of {len(ipc[f'{key}_msgs_per_s_runs'])}", "", "≥ 20,000", _ok(v, lambda x: x >= 20000)))
        rows.append(("1 IPC", "round trip, 1 MiB message", f"{ipc['big_rtt_ms_median']:.1f} ms median", "", "", "",
                     f"n={len(ipc['big_rtt_ms_runs'])}", "", "", ""))
        for key, label in (("online", "fork() → 'online'"), ("listening", "fork() → 'listening'")):
            xs = ipc[f"fork_{key}_ms_runs"]
            rows.append(("2 fork", label, f"{ipc[f'fork_{key}_ms_median']:.0f} ms median", "", "", "",
                         f"n={len(xs)}, min {min(xs):.0f}, max {max(xs):.0f} ms (plain socket bind+listen)",
                         "", "", ""))
    tp = res.get("throughput", {})
    for mode, mlabel in (("ka", "keep-alive"), ("close", "Connection: close")):
        for name, r in tp.items():
            m = r[mode]
            detail = ""
            if mode == "ka" and m["splits"]:
                detail = "conns/worker mid-run " + " ; ".join(
                    "/".join(map(str, s["workers"])) + (f"+m{s['master']}" if s["master"] else "") for s in m["splits"])
            detail += ("; " if detail else "") + f"wrk {m['wrk_cores']:.2f} cores"
            rows.append((f"3 {mlabel}", f"{TARGET_LABELS[name]}, 2 w", f"{_fmt(m['rps'])} req/s",
                         _fmt(m["p99_ms"], "%.1f"), _fmt(m["server_us_per_req"], "%.1f"),
                         _fmt(m["master_us_per_req"], "%.1f"), detail, "/".join(map(str, m["errors"])), "", ""))

    if tp:
        g = lambda n, mode, k: tp.get(n, {}).get(mode, {}).get(k)  # noqa: E731
        x, xs = paired_ratio(g("pyc-rr", "close", "rps_runs"), g("pyc-none", "close", "rps_runs"))
        rows.append(("3 ratio", "rr / none, Connection: close req/s", _fmt(x, "%.2f"), "", "", "",
                     f"per round {xs}; CPU µs/req rr {_fmt(g('pyc-rr', 'close', 'server_us_per_req'), '%.1f')}"
                     f" vs none {_fmt(g('pyc-none', 'close', 'server_us_per_req'), '%.1f')}", "", "≥ 0.85",
                     _ok(x, lambda v: v >= 0.85)))
        x, xs = paired_ratio(g("pyc-rr", "ka", "rps_runs"), g("indep-reuseport", "ka", "rps_runs"))
        rows.append(("3 ratio", "rr / independent reuseport, keep-alive req/s", _fmt(x, "%.2f"), "", "", "",
                     f"per round {xs}; CPU µs/req rr {_fmt(g('pyc-rr', 'ka', 'server_us_per_req'), '%.1f')}"
                     f" vs independent {_fmt(g('indep-reuseport', 'ka', 'server_us_per_req'), '%.1f')}", "",
                     "≥ 0.95", _ok(x, lambda v: v >= 0.95)))
        x = g("pyc-rr", "close", "master_us_per_req")
        rows.append(("3 ratio", "master CPU per connection, rr", f"{_fmt(x, '%.1f')} µs", "", "", "",
                     f"Node rr {_fmt(g('node-rr', 'close', 'master_us_per_req'), '%.1f')} µs", "", "≤ 15",
                     _ok(x, lambda v: v <= 15)))
    for name, b in res.get("balance", {}).items():
        good = (lambda v: v >= 0.99) if name == "pyc-rr" else None
        rows.append(("4 balance", f"{TARGET_LABELS[name]}, 8 w, Connection: close", f"Jain {_fmt(b['jain'], '%.3f')}",
                     "", "", "", f"{_fmt(b['rps'])} req/s (Lua wrk); max share {b['max_share']:.3f}, min "
                     f"{b['min_share']:.3f}; last run {' '.join(map(str, b['per_worker_last']))}",
                     "/".join(map(str, b["errors"])), "≥ 0.99" if good else "", _ok(b["jain"], good) if good else ""))
    k = res.get("kill")
    if k:
        lost = sum(k["lost"])
        after = sum(t["lost_after_death"] for t in k["trials"])
        rows.append(("5 kill", f"rr, 4 w, 4 probes in flight, SIGKILL 1 worker × {len(k['lost'])}",
                     f"{after} lost after death ({lost} in all)", "", "", "",
                     f"lost per trial {k['lost']} (sent before the victim was dead: "
                     f"{[t['lost_in_flight_at_kill'] for t in k['trials']]}), hung > 2 s {k['hung']}; "
                     f"kinds {sorted({x for t in k['trials'] for x in t['failure_kinds']}) or '-'}; "
                     f"probes {sum(t['probes'] for t in k['trials'])}",
                     "", "0 lost after death", "yes" if after == 0 else "**NO**"))
        rows.append(("5 kill", "replacement serving after SIGKILL (library-mode demo script, probes in flight)",
                     f"{_fmt(k['serving_ms_median'], '%.0f')} ms median", "", "", "",
                     "per trial " + " ".join(_fmt(t["serving_ms"], "%.0f") for t in k["trials"]) + " ms"
                     " (the CLI master's figure: bench_master.py, bench_all.py)",
                     "", "", ""))
    head = ("| section | measurement | result | p99 ms | server CPU µs/req | master CPU µs/req | detail | errors"
            " per run | target | ok |")
    lines = [head, "|---|---|---:|---:|---:|---:|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s runs, one run each (< 3 min)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 5, quick 2)")
    ap.add_argument("--runs", type=int, help="wrk runs per row, median reported (default 3, quick 1)")
    ap.add_argument("--kill-trials", type=int, default=5)
    ap.add_argument("--only", default="ipc,http,balance,kill", help="sections, comma-separated")
    ap.add_argument("--json", metavar="FILE", help="also write every number (per run) as JSON")
    ap.add_argument("--anchors", default=os.path.join(os.path.dirname(REPO), "shared", "anchors"),
                    help="the anchors directory (Node's app is apps/node-cluster.js in it)")
    ap.add_argument("--logdir", default=os.path.join("/tmp", f"pycluster-bench-{os.getpid()}"),
                    help="server logs")
    a = ap.parse_args()
    precompile()
    a.duration = a.duration or (2 if a.quick else 5)
    a.runs = a.runs or (1 if a.quick else 3)
    a.anchors = os.path.abspath(a.anchors)
    sections = set(a.only.split(","))
    b = Bench(a)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    load0 = os.getloadavg()
    try:
        if "ipc" in sections:
            b.ipc()
        if WRK and "http" in sections:
            b.throughput()
        if WRK and "balance" in sections:
            b.balance()
        if "kill" in sections:
            b.kill_trials()
    finally:
        stop_all()
    load1 = os.getloadavg()
    elapsed = time.monotonic() - t0
    tbl = table(b.res, a)
    print(tbl)
    print()
    print(f"{'quick' if a.quick else 'full'} mode: wrk runs of {a.duration} s, median of {a.runs}; "
          f"{elapsed:.0f} s in all; {os.cpu_count()} CPUs, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end"
          + (" (MEASURED UNDER LOAD: other work shared the CPUs; numbers are noisy)" if max(load0[0], load1[0]) > 1.0
             else ""))
    for n in b.notes:
        print(f"note: {n}")
    if a.json:
        doc = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": round(elapsed),
               "args": vars(a), "loadavg_start": load0, "loadavg_end": load1, "cpus": os.cpu_count(),
               "python": sys.version.split()[0], "psutil": psutil.__version__, "notes": b.notes,
               "results": b.res, "table": tbl}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
