"""The engine's overhead: pycluster next to its peers, one table (issue 6): Node's cluster, gunicorn, uvicorn.

    python tests/bench/bench_all.py [--quick] [--json FILE] [--only SECTIONS] [--targets KEYS]
                                    [--duration S] [--runs N]

Each manager runs its own minimal server (pycluster its demo app), so this
table measures the engine's overhead, not a user's app; for the same FastAPI /
Flask app under every manager see bench_sameapp.py. Every server answers the
same minimal hello (200, a few bytes of body, an
``X-Pid`` header naming the worker) on 127.0.0.1, started and measured in the
same run on this machine:

- pycluster: ``python -m pycluster.cli run pycluster.examples.hello:main -w N
  -b 127.0.0.1:PORT --policy rr|none|reuseport [--preload] -n NAME`` (this checkout);
- Node's cluster: ``node apps/node_cluster.js`` (NODE_CLUSTER_SCHED_POLICY rr|none);
- gunicorn: ``python -m gunicorn -w N [-k gthread --threads 4] apps/bench_wsgi:app``;
- uvicorn: ``python -m uvicorn apps/bench_asgi:app --workers N`` (as shipped: it
  does not set TCP_NODELAY on the sockets its workers accept).

Sections (--only, comma-separated):

throughput  2 workers each; all servers up at once, wrk runs interleaved (round
            i: every server keep-alive, then every server Connection: close) so
            background load hits them alike. ``wrk -t1 -c64 --latency``:
            req/s, p99, server CPU us/req (master + workers, psutil).
balance     8 workers, Connection: close, responses counted per X-Pid by a wrk
            Lua script (bench_count_pid.lua): max share, Jain index.
lifecycle   4 workers: launch -> first 200 (a GET polled every 5 ms from exec);
            master RSS, worker RSS / USS, total PSS (idle, after 1 s of load);
            kill -9 of a worker -> first 200 from a new pid (4 probes in flight);
            reload errors: wrk keep-alive while the master gets SIGHUP half-way
            (pycluster, gunicorn, uvicorn >= 0.30; Node's cluster has no reload).

Then, per row, the best pycluster mode over the best anchor (Node, gunicorn,
uvicorn), and which direction is better.

--quick (the CI smoke check): 2 s wrk runs, one each, rr/none/--preload
pycluster only, one launch, 2 kills, one 5 s reload run; under 3 minutes on 2
cores, exits 0 whenever it ran. Default: medians of 3 runs x 5 s (about 10 min).

Installs nothing. gunicorn and uvicorn are looked up, each on its own, in the
venv named by PYCLUSTER_BENCH_VENV, then this interpreter, then
/tmp/anchors-venv; node and wrk on PATH. What is missing loses its columns or
rows, with a note saying what to install. Load goes to 127.0.0.1 only; every
server runs in its own session and is stopped by process group (also on
Ctrl-C / SIGTERM); every wait is bounded, and a hard time cap ends the run.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import psutil  # noqa: E402
from bench_http import (  # noqa: E402
    HOST,
    LIVE,
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

APPS = os.path.join(HERE, "apps")
MIB = 2 ** 20
PROBERS = 3  # threads timing "every new worker answered" during a reload
RELOAD_GRACE = 5.0  # seconds after a reload run's wrk for the reload to complete (else "-", noted)

# column key -> header; the pycluster columns first, then the anchors
COLUMNS = {
    "pyc-rr": "pycluster rr", "pyc-none": "pycluster none", "pyc-reuseport": "pycluster reuseport",
    "pyc-preload": "pycluster rr --preload",
    "node-rr": "Node rr", "node-none": "Node none",
    "gunicorn-sync": "gunicorn sync", "gunicorn-gthread": "gunicorn gthread", "uvicorn": "uvicorn",
}
PYC = [k for k in COLUMNS if k.startswith("pyc-")]
ANCHORS = [k for k in COLUMNS if not k.startswith("pyc-")]
READY = {  # a log line naming a worker that is up (its pid in group 1)
    "pyc": r"worker \d+ \(pid (\d+)\) ready",
    "node": r"LISTENING (\d+)",
    "gunicorn": r"Booting worker with pid: (\d+)",
    "uvicorn": r"Started server process \[(\d+)\]",
}
NO_RELOAD = {"node-rr": "Node's cluster module has no reload", "node-none": "Node's cluster module has no reload"}

# which servers each section runs, by mode
PLAN = {
    "quick": {
        "throughput": ["pyc-rr", "pyc-none", "node-rr", "node-none", "gunicorn-sync", "gunicorn-gthread", "uvicorn"],
        "balance": ["pyc-rr", "pyc-none", "node-rr", "node-none", "gunicorn-sync", "gunicorn-gthread", "uvicorn"],
        "lifecycle": ["pyc-rr", "pyc-none", "pyc-preload", "node-rr", "gunicorn-sync", "gunicorn-gthread",
                      "uvicorn"],
    },
    "full": {
        "throughput": ["pyc-rr", "pyc-none", "pyc-reuseport", "node-rr", "node-none", "gunicorn-sync",
                       "gunicorn-gthread", "uvicorn"],
        "balance": ["pyc-rr", "pyc-none", "pyc-reuseport", "node-rr", "node-none", "gunicorn-sync",
                    "gunicorn-gthread", "uvicorn"],
        "lifecycle": list(COLUMNS),
    },
}
# (row key, label, better, format)
ROWS = [
    ("ka_rps", "keep-alive req/s (2 workers)", "higher", "%.0f"),
    ("close_rps", "Connection: close req/s (2 workers)", "higher", "%.0f"),
    ("ka_p99", "p99 latency keep-alive, ms", "lower", "%.1f"),
    ("close_p99", "p99 latency Connection: close, ms", "lower", "%.1f"),
    ("ka_cpu", "server CPU µs/req keep-alive", "lower", "%.1f"),
    ("close_cpu", "server CPU µs/req Connection: close", "lower", "%.1f"),
    ("max_share", "balance, 8 workers, close: max share (ideal 0.125)", "lower", "%.3f"),
    ("jain", "balance, 8 workers, close: Jain index (ideal 1)", "higher", "%.3f"),
    ("restart", "kill -9 a worker → new pid serving, ms (4 workers)", "lower", "%.0f"),
    ("launch", "launch → first 200, ms (4 workers)", "lower", "%.0f"),
    ("master_rss", "master RSS, MiB (4 idle workers)", "lower", "%.1f"),
    ("worker_rss", "worker RSS, MiB (mean)", "lower", "%.1f"),
    ("worker_uss", "worker USS, MiB (mean)", "lower", "%.1f"),
    ("total_pss", "PSS of all processes, MiB", "lower", "%.1f"),
    ("reload_err", "reload under keep-alive wrk: errors (per run)", "lower", "%.0f"),
    ("reload_s", "reload complete (no old worker left), s", "lower", "%.2f"),
    ("reload_serving", "reload → every new worker answered, s", "lower", "%.2f"),
]


class TimeCap(BaseException):
    """The hard time cap ran out (SIGALRM)."""


# -- finding the tools ------------------------------------------------------------------
def _probe(python: str, module: str) -> str | None:
    """The module's version when `python` can import it, else None."""
    try:
        out = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def find_python_tool(module: str) -> tuple[str | None, str | None]:
    """(python that imports `module`, its version): PYCLUSTER_BENCH_VENV, this interpreter, /tmp/anchors-venv."""
    candidates = []
    venv = os.environ.get("PYCLUSTER_BENCH_VENV")
    if venv:
        candidates.append(os.path.join(venv, "bin", "python"))
    candidates += [sys.executable, "/tmp/anchors-venv/bin/python"]
    for py in candidates:
        if os.path.exists(py):
            version = _probe(py, module)
            if version:
                return py, version
    return None, None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _cmd_output(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# -- a server with a launch clock ------------------------------------------------------------
class Target(Server):
    """bench_http.Server that can also time its launch to the first 200."""

    def launch(self, timeout: float) -> float:
        """Start; return ms from exec to the first 200; then wait until every worker is up."""
        self.log = open(self.logpath, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        LIVE.append(self)
        deadline = t0 + timeout
        first = None
        while first is None:
            try:
                if http_get(self.port, timeout=2.0)[0] == 200:
                    first = time.monotonic() - t0
                    break
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited rc={self.proc.returncode} (log: {self.logpath})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no 200 within {timeout} s (log: {self.logpath})")
            time.sleep(0.005)
        self.ps = psutil.Process(self.proc.pid)
        self.wait_listening(self.workers, timeout)
        return first * 1000


# -- the bench ---------------------------------------------------------------------------
class Bench:
    def __init__(self, a):
        self.a = a
        self.t0 = time.monotonic()
        self.notes: list[str] = []
        self.res: dict = {"throughput": {}, "balance": {}, "launch": {}, "restart": {}, "memory": {}, "reload": {},
                          "no_reload": dict(NO_RELOAD)}
        self.logdir = a.logdir
        os.makedirs(self.logdir, exist_ok=True)
        self.runtime = tempfile.mkdtemp(prefix="pyc-bench-all-")
        self.gunicorn_py, self.gunicorn_v = find_python_tool("gunicorn")
        self.uvicorn_py, self.uvicorn_v = find_python_tool("uvicorn")
        self.gunicorn_flags: list[str] = []
        if self.gunicorn_py:  # gunicorn >= 27 opens a control socket at a fixed path unless told not to
            helptext = _cmd_output([self.gunicorn_py, "-m", "gunicorn", "--help"])
            if "--no-control-socket" in helptext:
                self.gunicorn_flags.append("--no-control-socket")
        self.available = {k: True for k in COLUMNS}
        if not self.gunicorn_py:
            self.notes.append("gunicorn not found (`pip install gunicorn`, or PYCLUSTER_BENCH_VENV=<venv with it>):"
                              " its columns are skipped")
            self.available["gunicorn-sync"] = self.available["gunicorn-gthread"] = False
        if self.uvicorn_v and _version(self.uvicorn_v) < (0, 30):  # SIGHUP would end its master
            self.res["no_reload"]["uvicorn"] = "uvicorn < 0.30 has no reload"
        if not self.uvicorn_py:
            self.notes.append("uvicorn not found (`pip install uvicorn`, or PYCLUSTER_BENCH_VENV=<venv with it>):"
                              " its column is skipped")
            self.available["uvicorn"] = False
        if not NODE:
            self.notes.append("node not found (`apt-get install nodejs`): the Node columns are skipped")
            self.available["node-rr"] = self.available["node-none"] = False
        if not WRK:
            self.notes.append("wrk not found (`apt-get install wrk`): throughput, balance and reload rows skipped")

    # -- helpers ------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} +{self.elapsed():.0f}s] {msg}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def over_budget(self, what: str) -> bool:
        if self.elapsed() < self.a.budget:
            return False
        self.notes.append(f"{what}: skipped, past the time budget of {self.a.budget:.0f} s")
        return True

    def keys(self, section: str) -> list[str]:
        keys = PLAN["quick" if self.a.quick else "full"][section]
        if self.a.targets:
            keys = [k for k in keys if k in self.a.targets]
        return [k for k in keys if self.available[k]]

    def target(self, key: str, workers: int) -> Target:
        port = free_port()
        if key.startswith("pyc-"):
            policy = "rr" if key == "pyc-preload" else key[4:]
            argv = [sys.executable, "-m", "pycluster.cli", "run", "pycluster.examples.hello:main", "-w", str(workers),
                    "-b", f"{HOST}:{port}", "--policy", policy, "-n", f"b{port}"]
            if key == "pyc-preload":
                argv.append("--preload")
            env = pycluster_env()
            env["PYCLUSTER_RUNTIME_DIR"] = self.runtime
            ready = READY["pyc"]
        elif key.startswith("node-"):
            argv = [NODE, os.path.join(APPS, "node_cluster.js")]
            env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_CLUSTER_")}
            env.update(WORKERS=str(workers), PORT=str(port), HOST=HOST, NODE_CLUSTER_SCHED_POLICY=key[5:])
            ready = READY["node"]
        elif key.startswith("gunicorn-"):
            argv = [self.gunicorn_py, "-m", "gunicorn", "-w", str(workers), "-b", f"{HOST}:{port}", "--chdir", APPS,
                    "--log-level", "info", *self.gunicorn_flags]
            if key == "gunicorn-gthread":
                argv += ["-k", "gthread", "--threads", "4"]
            argv.append("bench_wsgi:app")
            env, ready = dict(os.environ), READY["gunicorn"]
        else:
            argv = [self.uvicorn_py, "-m", "uvicorn", "bench_asgi:app", "--app-dir", APPS, "--workers", str(workers),
                    "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "info"]
            env, ready = dict(os.environ), READY["uvicorn"]
        return Target(key, argv, env, ready, workers, self.logdir, port)

    def failed(self, what: str, exc: BaseException) -> None:
        self.notes.append(f"{what}: {type(exc).__name__}: {exc}")
        self.say(f"{what} FAILED: {exc}")

    # -- throughput, 2 workers -------------------------------------------------------------
    def throughput(self) -> None:
        servers: dict[str, Target] = {}
        runs: dict[str, dict[str, list]] = {}
        try:
            for key in self.keys("throughput"):
                srv = self.target(key, 2)
                try:
                    servers[key] = srv.start(timeout=self.a.start_timeout)
                except (RuntimeError, OSError, psutil.Error) as exc:
                    self.failed(f"{key} (throughput start)", exc)
                    srv.stop()
            if not self.a.quick:
                for srv in servers.values():
                    run_wrk(srv.port, 1)  # warm-up, discarded
            runs.update({k: {"ka": [], "close": []} for k in servers})
            for i in range(self.a.runs):
                if i and self.over_budget(f"throughput run {i + 1}"):
                    break
                for mode in ("ka", "close"):
                    for key, srv in servers.items():
                        r = run_wrk(srv.port, self.a.duration, close=(mode == "close"), server=srv)
                        if r["rps"] is None:
                            self.notes.append(f"{key} {mode}: wrk gave no result: {r.get('wrk_output', '')[-200:]!r}")
                        runs[key][mode].append(r)
                        self.say(f"throughput {key} {mode} run{i}: {r['rps']} req/s p99 {r['p99_ms']} ms "
                                 f"cpu {_f(r.get('server_us_per_req'), '%.1f')} us/req errors {r['errors']}")
        finally:  # what was measured counts, also when interrupted
            for srv in servers.values():
                srv.stop()
            for key, by_mode in runs.items():
                if any(by_mode.values()):
                    self.res["throughput"][key] = {mode: summarize(rs) for mode, rs in by_mode.items() if rs}

    # -- balance, 8 workers ---------------------------------------------------------------
    def balance(self) -> None:
        for key in self.keys("balance"):
            if self.over_budget(f"{key} balance"):
                continue
            srv = self.target(key, 8)
            try:
                srv.start(timeout=self.a.start_timeout)
                if not self.a.quick:
                    run_wrk(srv.port, 1, close=True)  # warm-up
                runs = []
                for i in range(self.a.runs):
                    pids = srv.listening_pids()
                    r = run_wrk(srv.port, self.a.duration, close=True, script=LUA_COUNT, server=srv)
                    if not r["xpid"]:
                        self.notes.append(f"{key} balance run {i}: no per-pid counts from wrk")
                        continue
                    counts = {str(p): 0 for p in pids}
                    other = 0
                    for pid, n in r["xpid"].items():
                        if pid.isdigit():
                            counts[pid] = counts.get(pid, 0) + n
                        else:  # a non-200 status or no X-Pid
                            other += n
                    xs = sorted(counts.values(), reverse=True)
                    total = sum(xs) or 1
                    runs.append({"rps": r["rps"], "per_worker": xs, "max_share": xs[0] / total,
                                 "jain": jain(xs), "errors": r["errors"], "not_counted": other})
                    self.say(f"balance {key} run{i}: {r['rps']} req/s max share {xs[0] / total:.3f} "
                             f"jain {_f(jain(xs), '%.3f')} {xs}")
                if runs:
                    self.res["balance"][key] = {"max_share": med([r["max_share"] for r in runs]),
                                                "jain": med([r["jain"] for r in runs]), "runs": runs}
            except (RuntimeError, OSError, psutil.Error) as exc:
                self.failed(f"{key} (balance)", exc)
            finally:
                srv.stop()

    # -- lifecycle, 4 workers: launch, memory, kill -9, reload --------------------------------
    def lifecycle(self) -> None:
        for key in self.keys("lifecycle"):
            if self.over_budget(f"{key} lifecycle"):
                continue
            srv = None
            try:
                launches = []
                for i in range(self.a.launch_trials):
                    srv = self.target(key, 4)
                    launches.append(srv.launch(self.a.start_timeout))
                    if i < self.a.launch_trials - 1:
                        srv.stop()
                self.res["launch"][key] = {"ms": med(launches), "runs": launches}
                self.say(f"launch {key}: {['%.0f' % x for x in launches]} ms")
                self.res["memory"][key] = self.memory(srv)
                m = self.res["memory"][key]
                self.say(f"memory {key}: master {m['master_rss'] / MIB:.1f} MiB, worker RSS "
                         f"{m['worker_rss'] / MIB:.1f} USS {m['worker_uss'] / MIB:.1f}, "
                         f"PSS all {m['total_pss'] / MIB:.1f}")
                trials = []
                for i in range(self.a.restart_trials):
                    t = restart_trial(srv, self.a.settle)
                    trials.append(t)
                    self.say(f"restart {key} trial{i}: {_f(t['serving_ms'], '%.1f')} ms, failed probes "
                             f"{t['failed']}/{t['probes']}")
                self.res["restart"][key] = {"ms": med([t["serving_ms"] for t in trials]), "trials": trials}
                if WRK and key not in self.res["no_reload"]:
                    runs = []
                    for i in range(self.a.reload_runs):
                        rr = self.reload_run(srv)
                        runs.append(rr)
                        self.say(f"reload {key} run{i}: errors {rr['errors']} (c{rr['err_connect']} r{rr['err_read']}"
                                 f" w{rr['err_write']} t{rr['err_timeout']} non2xx {rr['non2xx']}), complete after "
                                 f"{_f(rr['reload_s'], '%.2f')} s, every new worker answered after "
                                 f"{_f(rr['serving_s'], '%.2f')} s, {rr['rps']} req/s")
                    self.res["reload"][key] = {"errors": [r["errors"] for r in runs],
                                               "reload_s": med([r["reload_s"] for r in runs]),
                                               "serving_s": med([r["serving_s"] for r in runs]), "runs": runs}
            except (RuntimeError, OSError, psutil.Error) as exc:
                self.failed(f"{key} (lifecycle)", exc)
            finally:
                if srv is not None:
                    srv.stop()

    def memory(self, srv: Target) -> dict:
        """Idle memory after a short load (every worker has served): master RSS,
        workers' mean RSS / USS, PSS of every process (helpers, a fork server, included)."""
        if WRK:
            run_wrk(srv.port, 1)
        else:
            for _ in range(50):
                http_get(srv.port)
        time.sleep(1.0)
        workers = srv.listening_pids()
        info = {}
        for p in [srv.ps] + srv.children():
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    info[p.pid] = p.memory_full_info()
            except psutil.NoSuchProcess:
                pass
        ws = [info[p] for p in workers if p in info]
        helpers = [pid for pid in info if pid != srv.proc.pid and pid not in workers]
        return {"master_rss": info[srv.proc.pid].rss, "workers": len(ws),
                "worker_rss": sum(m.rss for m in ws) / max(len(ws), 1),
                "worker_uss": sum(m.uss for m in ws) / max(len(ws), 1),
                "total_pss": sum(m.pss for m in info.values()),
                "helpers": len(helpers), "helpers_rss": sum(info[p].rss for p in helpers)}

    def reload_run(self, srv: Target) -> dict:
        """wrk keep-alive for reload_duration s; SIGHUP to the master half-way;
        the reload is complete when no old worker is left and all are up again.

        "Every new worker answered" is the like-for-like figure: from the
        SIGHUP until each of the N new workers has answered a request
        (``probers`` threads send Connection: close GETs back to back beside
        the wrk load and read X-Pid). A manager that counts a worker as up
        when it is forked (gunicorn) is timed here once the worker has
        imported the app and serves."""
        old = srv.wait_listening(srv.workers, 30)
        old = old | set(srv.worker_pids())
        box: dict = {}
        stop = threading.Event()
        answered: dict[int, float] = {}  # new worker pid -> seconds after the SIGHUP of its first answer
        lock = threading.Lock()

        def probe(t_hup: float) -> None:
            deadline = t_hup + 60
            while not stop.is_set() and "serving_s" not in box and time.monotonic() < deadline:
                try:
                    status, xpid = http_get(srv.port, timeout=2.0)
                except (OSError, ValueError):
                    time.sleep(0.001)
                    continue
                if status != 200 or xpid is None or xpid in old:
                    continue
                with lock:
                    answered.setdefault(xpid, time.monotonic() - t_hup)
                    if len(answered) >= srv.workers and "serving_s" not in box:
                        box["serving_s"] = max(answered.values())

        def watch(t_hup: float) -> None:
            deadline = t_hup + 60
            while not stop.is_set() and time.monotonic() < deadline:
                alive = set(srv.worker_pids())
                if not (alive & old) and len(srv.listening_pids()) >= srv.workers:
                    box["reload_s"] = time.monotonic() - t_hup
                    return
                time.sleep(0.02)

        def hup() -> None:
            t = time.monotonic()
            os.kill(srv.proc.pid, signal.SIGHUP)
            box["thread"] = threading.Thread(target=watch, args=(t,), daemon=True)
            box["thread"].start()
            box["probers"] = [threading.Thread(target=probe, args=(t,), daemon=True) for _ in range(PROBERS)]
            for th in box["probers"]:
                th.start()

        try:
            r = run_wrk(srv.port, self.a.reload_duration, midrun=hup)
            end = time.monotonic() + RELOAD_GRACE
            th = box.get("thread")
            if th is not None:
                th.join(max(0.0, end - time.monotonic()))
                if th.is_alive():
                    self.notes.append(f"{srv.name}: reload not complete {RELOAD_GRACE:g} s after the wrk run")
            for th in box.get("probers", []):
                th.join(max(0.0, end - time.monotonic()))
            if box.get("probers") and "serving_s" not in box:
                self.notes.append(f"{srv.name}: {len(answered)} of {srv.workers} new workers answered"
                                  f" {RELOAD_GRACE:g} s after the wrk run")
        finally:
            stop.set()
            for th in [box.get("thread"), *box.get("probers", [])]:
                if th is not None:
                    th.join(5)
        return {"errors": r["errors"], "err_connect": r["err_connect"], "err_read": r["err_read"],
                "err_write": r["err_write"], "err_timeout": r["err_timeout"], "non2xx": r["non2xx"],
                "rps": r["rps"], "reload_s": box.get("reload_s"), "serving_s": box.get("serving_s"),
                "within_run": box.get("reload_s") is not None and box["reload_s"] < self.a.reload_duration / 2}


def summarize(rs: list[dict]) -> dict:
    return {"rps": med([r["rps"] for r in rs]), "p99_ms": med([r["p99_ms"] for r in rs]),
            "server_us_per_req": med([r.get("server_us_per_req") for r in rs]),
            "errors": [r["errors"] for r in rs], "wrk_cores": med([r["wrk_cpu_s"] / r["wall_s"] for r in rs]),
            "runs": [{k: v for k, v in r.items() if k not in ("argv", "wrk_output")} for r in rs]}


def restart_trial(srv: Target, settle: float, probes: int = 4, limit: float = 10.0) -> dict:
    """SIGKILL the lowest-pid worker; `probes` GETs stay in flight until one is
    answered by a pid that was not there before: ms from the kill to that answer."""
    old = srv.wait_listening(srv.workers, 30)
    time.sleep(settle)  # the last replacement settles
    old = set(srv.worker_pids()) | old
    victim = min(srv.listening_pids())
    found: list[float] = []
    counts = {"probes": 0, "failed": 0}
    stop = threading.Event()
    t0 = time.monotonic()

    def prober() -> None:
        while not stop.is_set() and time.monotonic() - t0 < limit:
            try:
                status, xpid = http_get(srv.port, timeout=2.0)
            except (OSError, ValueError):
                counts["failed"] += 1
                counts["probes"] += 1
                time.sleep(0.001)
                continue
            counts["probes"] += 1
            if status == 200 and xpid is not None and xpid not in old:
                found.append(time.monotonic())
                stop.set()

    threads = [threading.Thread(target=prober, daemon=True) for _ in range(probes)]
    os.kill(victim, signal.SIGKILL)
    for th in threads:
        th.start()
    for th in threads:
        th.join(limit + 5)
    stop.set()
    return {"victim": victim, "serving_ms": (min(found) - t0) * 1000 if found else None, **counts}


# -- the table ----------------------------------------------------------------------------
def _f(x, fmt: str = "%.0f") -> str:
    return "-" if x is None else fmt % x


def cells(res: dict) -> dict[str, dict[str, tuple[float | None, str]]]:
    """row -> column -> (value for the ratio, text)."""
    out: dict[str, dict] = {row[0]: {} for row in ROWS}
    fmt = {row[0]: row[3] for row in ROWS}

    def put(row: str, col: str, value, text: str | None = None) -> None:
        out[row][col] = (value, text if text is not None else _f(value, fmt[row]))

    for col, t in res["throughput"].items():
        for mode in t:
            put(f"{mode}_rps", col, t[mode]["rps"])
            put(f"{mode}_p99", col, t[mode]["p99_ms"])
            put(f"{mode}_cpu", col, t[mode]["server_us_per_req"])
    for col, b in res["balance"].items():
        put("max_share", col, b["max_share"])
        put("jain", col, b["jain"])
    for col, r in res["restart"].items():
        put("restart", col, r["ms"])
    for col, r in res["launch"].items():
        put("launch", col, r["ms"])
    for col, m in res["memory"].items():
        for k in ("master_rss", "worker_rss", "worker_uss", "total_pss"):
            put(k, col, m[k] / MIB)
    for col, r in res["reload"].items():
        put("reload_err", col, med(r["errors"]),
            "/".join(f"{x['errors']}{'' if x['within_run'] else '†'}" for x in r["runs"]))
        put("reload_s", col, r["reload_s"])
        put("reload_serving", col, r.get("serving_s"))
    return out


def ratio(row: dict, better: str, ours: list[str] | None = None, theirs: list[str] | None = None,
          names: dict[str, str] | None = None) -> str:
    """pycluster's best column over the best anchor's (``ours``/``theirs``: column keys, in order)."""
    names = COLUMNS if names is None else names
    pick = max if better == "higher" else min  # the first in column order wins a tie
    pyc = [(row[k][0], k) for k in (PYC if ours is None else ours) if k in row and row[k][0] is not None]
    anc = [(row[k][0], k) for k in (ANCHORS if theirs is None else theirs) if k in row and row[k][0] is not None]
    if not pyc or not anc:
        return "-"
    (pv, pk), (av, ak) = pick(pyc, key=lambda t: t[0]), pick(anc, key=lambda t: t[0])
    who = f"{names[pk]} / {names[ak]}"
    if av == 0 and pv == 0:
        return f"equal, 0 ({who})"
    if av == 0:
        return f"∞, worse ({who})"
    x = pv / av
    good = x >= 1 if better == "higher" else x <= 1
    return f"**{x:.2f}×** {'✓' if good else '✗'} ({who})"


def run_sections(b: Bench, sections: list[str]) -> int:
    """Run the sections in order (wrk-less: lifecycle only); 130 when interrupted. Whatever
    happens, every server is stopped and the runtime dir removed (partial tables stay)."""
    rc = 0
    try:
        for section in sections:
            if section in ("throughput", "balance", "lifecycle"):
                if section != "lifecycle" and not WRK:
                    continue
                b.say(f"section {section}")
                getattr(b, section)()
            else:
                b.notes.append(f"unknown section {section!r} ignored")
    except TimeCap as exc:
        b.notes.append(f"stopped early: {exc} (partial tables)")
    except KeyboardInterrupt as exc:
        b.notes.append(f"interrupted ({str(exc) or 'Ctrl-C'}): partial tables")
        rc = 130
    finally:
        signal.alarm(0)
        stop_all()
        shutil.rmtree(b.runtime, ignore_errors=True)
    return rc


def table(res: dict) -> str:
    c = cells(res)
    cols = [k for k in COLUMNS if any(k in c[row[0]] for row in ROWS)]
    if not cols:
        return "(nothing was measured)"
    lines = ["| measurement | better | " + " | ".join(COLUMNS[k] for k in cols) + " | pycluster best / best anchor |",
             "|---|---|" + "---:|" * len(cols) + "---|"]
    for key, label, better, _ in ROWS:
        row = c[key]
        if not row:
            continue
        texts = []
        for k in cols:
            if k in row:
                texts.append(row[k][1])
            elif key.startswith("reload") and k in res["no_reload"]:
                texts.append("n/a")
            else:
                texts.append("·")
        lines.append(f"| {label} | {'↑' if better == 'higher' else '↓'} {better} | " + " | ".join(texts)
                     + f" | {ratio(row, better)} |")
    return "\n".join(lines)


def versions(b: Bench) -> dict:
    wrk = re.search(r"wrk (\S+)", _cmd_output([WRK, "-v"])) if WRK else None
    return {"python": sys.version.split()[0], "gunicorn": b.gunicorn_v, "gunicorn_python": b.gunicorn_py,
            "uvicorn": b.uvicorn_v, "uvicorn_python": b.uvicorn_py,
            "node": _cmd_output([NODE, "--version"]) if NODE else None, "wrk": wrk.group(1) if wrk else None,
            "psutil": psutil.__version__, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0))}


def _sysctl(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def footer(b: Bench, v: dict, elapsed: float, load0, load1) -> list[str]:
    a = b.a
    mode = "quick" if a.quick else "full"
    out = [
        f"{mode} mode: wrk -t1 -c64 runs of {a.duration} s, median of {a.runs} (throughput, balance); "
        f"{a.launch_trials} launch(es), {a.restart_trials} kill -9 trials, {a.reload_runs} reload run(s) of "
        f"{a.reload_duration} s (SIGHUP at {a.reload_duration / 2:g} s); {elapsed:.0f} s in all.",
        f"Versions: Python {v['python']}, gunicorn {v['gunicorn'] or 'missing'}, uvicorn "
        f"{(v['uvicorn'] + ' (its default loop and HTTP parser)') if v['uvicorn'] else 'missing'}, "
        f"Node {v['node'] or 'missing'}, wrk {v['wrk'] or 'missing'}, "
        f"psutil {v['psutil']}, Linux {v['kernel']}.",
        f"{v['cpus']} CPU cores ({v['cpus_usable']} usable), load average {load0[0]:.1f} at start, {load1[0]:.1f} at "
        f"end{' (other work shared the CPUs: numbers are noisy)' if max(load0[0], load1[0]) > 1.0 else ''}. "
        "wrk (1 thread) shares these cores with the server under test, so req/s are partly client-bound: "
        "compare the CPU µs/req rows and the ratios.",
        "Ratio: pycluster's best column over the best anchor column in that row (Node, gunicorn, uvicorn); "
        "✓ = pycluster is at least as good in the row's direction.",
        "Cells: `·` not measured for this column in this mode; `n/a` the server has no such feature "
        f"({'; '.join(sorted(set(b.res['no_reload'].values())))}); a missing column was skipped (see notes).",
        "As shipped: gunicorn sync has no keep-alive (it closes every connection); gunicorn gthread uses "
        "--threads 4; uvicorn --workers does not set TCP_NODELAY on accepted sockets (keep-alive responses can "
        "stall on Nagle + delayed ACK); pycluster's server is its demo app (pycluster.examples.hello).",
        "Reload = SIGHUP to the master under `wrk -c64` keep-alive (4 workers); errors = wrk socket errors + "
        "non-2xx; † = that reload finished after wrk stopped (later errors not seen). pycluster reuseport's "
        f"reload depends on net.ipv4.tcp_migrate_req (= {_sysctl('/proc/sys/net/ipv4/tcp_migrate_req')} here).",
        f"Server logs: {b.logdir}",
    ]
    return out


def arm(hard_cap: int) -> None:
    """Before a run: SIGTERM interrupts it, SIGALRM stops it after ``hard_cap`` s
    (whatever is running), every server left is stopped at exit, and the package
    is byte-compiled."""
    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise TimeCap(f"hard time cap of {hard_cap} s")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    atexit.register(stop_all)
    signal.alarm(hard_cap)
    precompile()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the < 3 minute smoke run")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 5, quick 2)")
    ap.add_argument("--runs", type=int, help="wrk runs per cell, median reported (default 3, quick 1)")
    ap.add_argument("--only", default="throughput,balance,lifecycle", help="sections, comma-separated")
    ap.add_argument("--targets", default="", help="column keys to run, comma-separated: " + ",".join(COLUMNS))
    ap.add_argument("--json", metavar="FILE", help="also write every number (per run) as JSON")
    ap.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), f"pycluster-bench-all-{os.getpid()}"))
    a = ap.parse_args()
    a.duration = a.duration or (2 if a.quick else 5)
    a.runs = a.runs or (1 if a.quick else 3)
    a.launch_trials = 1 if a.quick else 5
    a.restart_trials = 2 if a.quick else 5
    a.reload_runs = 1 if a.quick else 3
    a.reload_duration = 5 if a.quick else 8
    a.settle = 0.3
    a.start_timeout = 30.0 if a.quick else 60.0
    a.budget = 140.0 if a.quick else 840.0  # soft: past it, remaining servers are skipped (noted)
    hard_cap = 170 if a.quick else 1200  # SIGALRM: whatever is running is stopped
    a.targets = {t for t in a.targets.split(",") if t}
    unknown = a.targets - set(COLUMNS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; known: {','.join(COLUMNS)}")
    sections = [s for s in a.only.split(",") if s]
    arm(hard_cap)
    b = Bench(a)
    load0 = os.getloadavg()
    rc = run_sections(b, sections)
    load1 = os.getloadavg()
    elapsed = b.elapsed()
    v = versions(b)
    tbl = table(b.res)
    print("**Engine overhead** (each manager runs its own minimal hello server; the same app side by side: "
          "bench_sameapp.py)\n")
    print(tbl)
    print()
    for line in footer(b, v, elapsed, load0, load1):
        print(f"- {line}")
    for n in b.notes:
        print(f"- note: {n}")
    if a.json:
        doc = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": round(elapsed),
               "mode": "quick" if a.quick else "full",
               "args": {k: (sorted(x) if isinstance(x, set) else x) for k, x in vars(a).items()},
               "versions": v, "loadavg_start": load0, "loadavg_end": load1, "notes": b.notes,
               "results": b.res,
               "cells": {r: {c: list(x) for c, x in cols.items()} for r, cols in cells(b.res).items()},
               "table": tbl}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
