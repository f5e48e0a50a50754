"""The same app under every manager that can serve it, side by side (issue 14).

    python tests/bench/bench_sameapp.py [--quick] [--json FILE] [--only SECTIONS] [--targets KEYS]
                                        [--duration S] [--runs N]

bench_all.py compares managers that each run a different server (it measures
the engine's overhead); here every column of a table runs the *same* app
(tests/bench/apps/stacks/) at the same worker count:

- FastAPI (``fastapi_app:app``): ``pycluster run fastapi_app:app`` (served,
  --policy rr and none); ``pycluster run selfrun:uvicorn_fastapi`` (the app
  calls ``uvicorn.run`` itself, rr); ``uvicorn --workers N``; ``gunicorn -k
  uvicorn.workers.UvicornWorker -w N``;
- Flask (``flask_app:app``): ``pycluster run flask_app:app`` (rr, none; and
  rr ``--threads 1``, one request at a time per worker as gunicorn sync, in
  the throughput rows); ``gunicorn -k gthread --threads 4 -w N``;
  ``gunicorn -k sync -w N``;
- in full mode, also pycluster rr ``--preload`` of each app, in the lifecycle
  rows only (launch, memory, kill -9, reload);
- asyncio streams (``selfrun:streams``, ``asyncio.start_server``): pycluster rr
  and none only (no anchor serves it): throughput and balance, for the RR /
  none row.

Sections and rows are bench_all's (its Bench class runs them): throughput (2
workers, every server up at once, wrk interleaved: req/s, p99, server CPU
µs/req via psutil, master + workers), balance (8 workers, Connection: close,
Jain index over X-Pid counts), lifecycle (4 workers: launch -> first 200,
memory, kill -9 -> new pid serving, reload errors under keep-alive wrk and
reload duration). Each table ends with pycluster's best column over the best
anchor column per row.

--quick: 2 s wrk runs, one each, no balance section, no --preload, one launch, 2 kills, one 7 s
reload run (about 3 minutes on 2 cores). Default: 3 runs x 3 s, balance,
3 launches, 3 kills, one balance run, 2 reload runs of 7 s (under 10 minutes). Installs nothing;
loopback only; every server runs in its own session, stopped by process group.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_all  # noqa: E402
from bench_all import MIB, ROWS, Bench, Target, cells, versions  # noqa: E402
from bench_http import HOST, WRK, free_port, med, pycluster_env  # noqa: E402

APPS = os.path.join(HERE, "apps", "stacks")

# app -> column key -> header (pycluster columns first, "pyc" in the key)
APPS_COLUMNS = {
    "FastAPI": {
        "fa-pyc-rr": "pycluster rr (served)", "fa-pyc-none": "pycluster none (served)",
        "fa-pyc-selfrun": "pycluster rr, uvicorn.run", "fa-pyc-preload": "pycluster rr --preload",
        "fa-uvicorn": "uvicorn --workers", "fa-gunicorn-uw": "gunicorn UvicornWorker",
    },
    "Flask": {
        "fl-pyc-rr": "pycluster rr (served)", "fl-pyc-none": "pycluster none (served)",
        "fl-pyc-preload": "pycluster rr --preload", "fl-pyc-t1": "pycluster rr --threads 1",
        "fl-gunicorn-gthread": "gunicorn gthread (4 threads)", "fl-gunicorn-sync": "gunicorn sync",
    },
    "asyncio streams": {"st-pyc-rr": "pycluster rr", "st-pyc-none": "pycluster none"},
}
COLUMNS = {k: v for cols in APPS_COLUMNS.values() for k, v in cols.items()}
TARGET = {  # pycluster target per column
    "fa-pyc-rr": "fastapi_app:app", "fa-pyc-none": "fastapi_app:app", "fa-pyc-selfrun": "selfrun:uvicorn_fastapi",
    "fa-pyc-preload": "fastapi_app:app", "fl-pyc-preload": "flask_app:app",
    "fl-pyc-rr": "flask_app:app", "fl-pyc-none": "flask_app:app", "fl-pyc-t1": "flask_app:app",
    "st-pyc-rr": "selfrun:streams", "st-pyc-none": "selfrun:streams",
}
PRELOAD = [k for k in COLUMNS if k.endswith("-preload")]  # lifecycle only (launch, memory, kill -9, reload), full mode
EXTRA = {"fl-pyc-t1": ["--threads", "1"]}  # one request at a time per worker, as gunicorn sync: throughput only
PLAN = {"throughput": [k for k in COLUMNS if k not in PRELOAD],
        "balance": [k for k in COLUMNS if k not in PRELOAD and k not in EXTRA],
        "lifecycle": [k for k in COLUMNS if not k.startswith("st-") and k not in EXTRA]}
SHOWN = [r for r in ROWS if r[0] not in ("max_share", "worker_rss")]


def is_pyc(key: str) -> bool:
    return "-pyc-" in key


class SameApp(Bench):
    """bench_all's sections (throughput, balance, lifecycle) over the same-app columns."""

    def __init__(self, a):
        super().__init__(a)
        self.notes = [n for n in self.notes if not n.startswith("node")]
        self.res["no_reload"] = {}
        have = {"gunicorn": self.gunicorn_py is not None, "uvicorn": self.uvicorn_py is not None}
        self.available = {k: not (("gunicorn" in k and not have["gunicorn"]) or (k == "fa-uvicorn" and not have["uvicorn"]))
                          for k in COLUMNS}

    def balance(self) -> None:
        """bench_all's balance section, one wrk run per server (the Jain index varies little)."""
        runs, self.a.runs = self.a.runs, 1
        try:
            super().balance()
        finally:
            self.a.runs = runs

    def keys(self, section: str) -> list[str]:
        keys = PLAN[section]
        if self.a.quick and not self.a.targets:
            keys = [k for k in keys if k not in PRELOAD]
        if self.a.targets:
            keys = [k for k in keys if k in self.a.targets]
        return [k for k in keys if self.available[k]]

    def target(self, key: str, workers: int) -> Target:
        port = free_port()
        env = pycluster_env()
        env["PYTHONPATH"] = os.pathsep.join([APPS, env["PYTHONPATH"]])
        env["PORT"] = str(port)
        if is_pyc(key):
            argv = [sys.executable, "-m", "pycluster.cli", "run", TARGET[key], "-w", str(workers),
                    "-b", f"{HOST}:{port}", "--policy", "none" if key.endswith("-none") else "rr", "-n", f"b{port}"]
            if key in PRELOAD:
                argv.append("--preload")
            argv += EXTRA.get(key, [])
            env["PYCLUSTER_RUNTIME_DIR"] = self.runtime
            ready = bench_all.READY["pyc"]
        elif "gunicorn" in key:
            worker = {"fa-gunicorn-uw": ["-k", "uvicorn.workers.UvicornWorker", "fastapi_app:app"],
                      "fl-gunicorn-gthread": ["-k", "gthread", "--threads", "4", "flask_app:app"],
                      "fl-gunicorn-sync": ["-k", "sync", "flask_app:app"]}[key]
            argv = [self.gunicorn_py, "-m", "gunicorn", "-w", str(workers), "-b", f"{HOST}:{port}", "--chdir", APPS,
                    "--log-level", "info", *self.gunicorn_flags, *worker]
            ready = bench_all.READY["gunicorn"]
        else:
            argv = [self.uvicorn_py, "-m", "uvicorn", "fastapi_app:app", "--app-dir", APPS, "--workers", str(workers),
                    "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "info"]
            ready = bench_all.READY["uvicorn"]
        return Target(key, argv, env, ready, workers, self.logdir, port)


# -- the tables ---------------------------------------------------------------------------
def ratio(row: dict, better: str, cols: list[str]) -> str:
    return bench_all.ratio(row, better, [k for k in cols if is_pyc(k)], [k for k in cols if not is_pyc(k)], COLUMNS)


def tables(res: dict) -> str:
    c = cells(res)
    out = []
    for app, app_cols in APPS_COLUMNS.items():
        cols = [k for k in app_cols if any(k in c[r[0]] for r in SHOWN)]
        if not cols:
            continue
        anchors = any(not is_pyc(k) for k in cols)
        out += [f"**{app}**", "",
                "| measurement | better | " + " | ".join(COLUMNS[k] for k in cols)
                + (" | pycluster best / best anchor |" if anchors else " |"),
                "|---|---|" + "---:|" * len(cols) + ("---|" if anchors else "")]
        for key, label, better, _ in SHOWN:
            row = c[key]
            if not any(k in row for k in cols):
                continue
            texts = [row[k][1] if k in row else "·" for k in cols]
            out.append(f"| {label} | {'↑' if better == 'higher' else '↓'} {better} | " + " | ".join(texts)
                       + (f" | {ratio(row, better, cols)} |" if anchors else " |"))
        out.append("")
    rr_none = []
    for app, app_cols in APPS_COLUMNS.items():
        rr = next((k for k in app_cols if k.endswith("-pyc-rr")), None)
        none = next((k for k in app_cols if k.endswith("-pyc-none")), None)
        t = res["throughput"]
        if rr in t and none in t and "close" in t[rr] and "close" in t[none]:
            a, b = t[rr]["close"]["rps"], t[none]["close"]["rps"]
            if a and b:
                rr_none.append(f"| {app} | {a:.0f} | {b:.0f} | **{a / b:.2f}×** {'✓' if a / b >= 0.85 else '✗'} |")
    if rr_none:
        out += ["**RR / none, Connection: close req/s, 2 workers** (SPEC: rr >= 0.85× none)", "",
                "| app | pycluster rr | pycluster none | rr / none |", "|---|---:|---:|---|", *rr_none, ""]
    return "\n".join(out).rstrip() or "(nothing was measured)"


def footer(b: SameApp, v: dict, elapsed: float, load0, load1) -> list[str]:
    a = b.a
    noisy = max(load0[0], load1[0]) > 1.0
    return [
        f"{'quick' if a.quick else 'full'} mode: wrk -t1 -c64 runs of {a.duration} s, median of {a.runs} "
        f"(throughput{'; balance: one run' if 'balance' in a.only else ''}); {a.launch_trials} launch(es), "
        f"{a.restart_trials} kill -9 trials, {a.reload_runs} reload run(s) of {a.reload_duration} s "
        f"(SIGHUP to the master at {a.reload_duration / 2:g} s); {elapsed:.0f} s in all.",
        f"Versions: Python {v['python']}, gunicorn {v['gunicorn'] or 'missing'}, uvicorn {v['uvicorn'] or 'missing'}"
        f" (uvloop + httptools where installed), wrk {v['wrk'] or 'missing'}, Linux {v['kernel']}.",
        f"{v['cpus']} CPU cores ({v['cpus_usable']} usable), load average {load0[0]:.1f} at start, {load1[0]:.1f} at "
        f"end{' (other work shared the CPUs: numbers are noisy)' if noisy else ''}. wrk shares the cores with the "
        "servers: req/s are partly client-bound; compare CPU µs/req and the ratios.",
        "Ratio: pycluster's best column over the best anchor column of the same app; ✓ = pycluster at least as "
        "good in the row's direction. `·` = not measured for that column. gunicorn sync closes every connection "
        "(no keep-alive).",
        "Reload errors: wrk socket errors + non-2xx per run; † = the reload finished after wrk stopped.",
        f"Server logs: {b.logdir}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~3 minute run")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 3, quick 2)")
    ap.add_argument("--runs", type=int, help="wrk runs per cell, median reported (default 3, quick 1)")
    ap.add_argument("--only", default=None,
                    help="sections, comma-separated (default throughput,balance,lifecycle; quick: no balance)")
    ap.add_argument("--targets", default="", help="column keys, comma-separated: " + ",".join(COLUMNS))
    ap.add_argument("--json", metavar="FILE", help="also write every number (per run) as JSON")
    ap.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), f"pycluster-bench-sameapp-{os.getpid()}"))
    a = ap.parse_args()
    a.duration = a.duration or (2 if a.quick else 3)
    a.runs = a.runs or (1 if a.quick else 3)
    a.only = a.only or ("throughput,lifecycle" if a.quick else "throughput,balance,lifecycle")
    a.launch_trials = 1 if a.quick else 3
    a.restart_trials = 2 if a.quick else 3
    a.reload_runs = 1 if a.quick else 2
    a.reload_duration = 7
    a.settle = 0.3
    a.start_timeout = 30.0 if a.quick else 60.0
    a.budget = 190.0 if a.quick else 570.0  # soft: past it, the remaining servers are skipped (noted)
    hard_cap = 230 if a.quick else 600
    a.targets = {t for t in a.targets.split(",") if t}
    if unknown := a.targets - set(COLUMNS):
        ap.error(f"unknown targets {sorted(unknown)}; known: {','.join(COLUMNS)}")
    bench_all.arm(hard_cap)
    b = SameApp(a)
    if not WRK:
        b.notes.append("wrk not found (`apt-get install wrk`): throughput, balance and reload rows skipped")
    load0 = os.getloadavg()
    rc = bench_all.run_sections(b, [s for s in a.only.split(",") if s])
    load1 = os.getloadavg()
    elapsed = b.elapsed()
    v = versions(b)
    text = tables(b.res)
    print(text)
    print()
    for line in footer(b, v, elapsed, load0, load1):
        print(f"- {line}")
    for n in b.notes:
        print(f"- note: {n}")
    if a.json:
        doc = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": round(elapsed),
               "mode": "quick" if a.quick else "full",
               "args": {k: (sorted(x) if isinstance(x, set) else x) for k, x in vars(a).items()},
               "versions": v, "loadavg_start": load0, "loadavg_end": load1, "notes": b.notes, "results": b.res,
               "memory_mib": {k: {x: y / MIB for x, y in m.items() if x.endswith(("rss", "uss", "pss"))}
                              for k, m in b.res["memory"].items()},
               "median_launch_ms": {k: med(r["runs"]) for k, r in b.res["launch"].items()}, "tables": text}
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    return rc


if __name__ == "__main__":
    sys.exit(main())
