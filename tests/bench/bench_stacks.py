"""Keep-alive reload errors per stack, pycluster beside gunicorn (issue 13, SPEC 7/8).

    python tests/bench/bench_stacks.py [--quick] [--runs N] [--only ROWS] [--stacks NAMES] [--logs DIR]

ROWS (comma-separated, default all): ``self`` (stacks that run their own server
under ``pycluster run selfrun:<stack> -w 4``, rr and none: uvicorn.run with its
default loop, aiohttp web.run_app, tornado, waitress, hypercorn, werkzeug/Flask
app.run), ``gunicorn`` (the anchors: UvicornWorker, aiohttp.GunicornWebWorker,
gthread --threads 4 and sync, 4 workers, ``kill -HUP`` of the master),
``served`` (``pycluster run fastapi_app:app`` / ``flask_app:app`` with 8
workers, rr and none, with and without --preload; needs SPEC 8 serving) and
``rps`` (served-app req/s with 2 workers, keep-alive and Connection: close,
pycluster beside ``uvicorn --workers 2`` and gunicorn).

A reload row: start the server on 127.0.0.1, run ``wrk`` with keep-alive and,
half-way, reload it (``pycluster reload -n NAME``, which returns once the new
generation is complete; for gunicorn ``SIGHUP`` to the master, then wait until
its log shows the new workers booted). Errors are wrk's socket errors
(connect, read, write, timeout) plus non-2xx responses.

The apps live in tests/bench/apps/stacks/. Installs nothing: a stack whose
package is missing is skipped with a note. Loopback only; each server runs in
its own session and is stopped by process group; every wait is bounded.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_http import HOST, WRK, cli_env, free_port, http_get, precompile, run_wrk, stop_group  # noqa: E402

APPS = os.path.join(HERE, "apps", "stacks")
PY = sys.executable

# name -> (modules it needs, pycluster target)
SELF_RUN = {
    "uvicorn.run (uvloop)": (("uvicorn", "uvloop"), "selfrun:uvicorn"),
    "aiohttp run_app": (("aiohttp",), "selfrun:aiohttp"),
    "tornado": (("tornado",), "selfrun:tornado"),
    "waitress": (("waitress", "flask"), "selfrun:waitress"),
    "hypercorn": (("hypercorn",), "selfrun:hypercorn"),
    "werkzeug app.run": (("flask",), "selfrun:werkzeug"),
}


def uvicorn_worker() -> str | None:
    """The UvicornWorker class gunicorn can load: uvicorn_worker's, else uvicorn's own."""
    if importlib.util.find_spec("uvicorn_worker"):
        return "uvicorn_worker.UvicornWorker"
    if importlib.util.find_spec("uvicorn") and importlib.util.find_spec("uvicorn.workers"):
        return "uvicorn.workers.UvicornWorker"
    return None


# name -> (modules it needs, gunicorn arguments after -w/-b)
def gunicorn_rows() -> dict[str, tuple[tuple[str, ...], list[str]]]:
    uw = uvicorn_worker()
    return {
        "UvicornWorker": (("gunicorn", "uvicorn") if uw else ("gunicorn", "uvicorn_worker"),
                          ["-k", uw or "uvicorn_worker.UvicornWorker", "asgi_app:app"]),
        "aiohttp GunicornWebWorker": (("gunicorn", "aiohttp"), ["-k", "aiohttp.GunicornWebWorker", "aiohttp_app:app"]),
        "gthread --threads 4 (Flask)": (("gunicorn", "flask"), ["-k", "gthread", "--threads", "4", "flask_app:app"]),
        "sync (Flask)": (("gunicorn", "flask"), ["-k", "sync", "flask_app:app"]),
    }


def missing(mods: tuple[str, ...]) -> list[str]:
    return [m for m in mods if importlib.util.find_spec(m) is None]


def serving_supported() -> bool:
    """True when this checkout's `pycluster run` serves ASGI/WSGI apps (SPEC 8: it has --interface)."""
    out = subprocess.run([PY, "-m", "pycluster.cli", "run", "--help"], env=cli_env(tempfile.gettempdir()),
                         capture_output=True, text=True, timeout=30)
    return "--interface" in out.stdout


# -- one server ---------------------------------------------------------------------
@dataclass
class Launch:
    """How to start one server and know it is ready and reload it."""
    argv: list[str]
    ready: str               # regex counted in the log
    count: int               # how many matches mean ready
    kind: str                # "pycluster" | "gunicorn" | "plain"
    name: str = ""
    gone: str = r"Worker exiting|Finished server process"  # gunicorn: an old worker has exited
    env: dict[str, str] = field(default_factory=dict)


class Running:
    def __init__(self, launch: Launch, port: int, logdir: str, tag: str):
        self.launch, self.port = launch, port
        self.runtime = tempfile.mkdtemp(prefix="pyc-stacks-")
        self.env = cli_env(self.runtime)
        self.env["PYTHONPATH"] = os.pathsep.join([APPS, self.env["PYTHONPATH"]])
        self.env["PORT"] = str(port)
        self.env.update(launch.env)
        self.logpath = os.path.join(logdir, f"{tag}-{port}.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(launch.argv, env=self.env, cwd=APPS, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        with open(self.logpath, errors="replace") as fh:
            return fh.read()

    def matches(self) -> int:
        return len(re.findall(self.launch.ready, self.text()))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.matches() < self.launch.count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"not ready (rc={self.proc.poll()}):\n{self.text()[-1500:]}")
            time.sleep(0.05)
        while True:  # and a first 200 through the whole path
            try:
                if http_get(self.port, timeout=3.0)[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no 200 (rc={self.proc.poll()}):\n{self.text()[-1500:]}")
            time.sleep(0.05)

    def reload(self) -> dict:
        t0 = time.monotonic()
        if self.launch.kind == "pycluster":
            done = subprocess.run([PY, "-m", "pycluster.cli", "reload", "-n", self.launch.name], env=self.env,
                                  capture_output=True, text=True, timeout=120)
            ok, out = done.returncode == 0, (done.stdout + done.stderr)[-300:]
        else:  # gunicorn: HUP, then wait until N new workers booted and N old ones exited
            n = self.launch.count
            before = (self.matches(), len(re.findall(self.launch.gone, self.text())))

            def done() -> bool:
                return (self.matches() >= before[0] + n
                        and len(re.findall(self.launch.gone, self.text())) >= before[1] + n)
            os.kill(self.proc.pid, signal.SIGHUP)
            while not done() and time.monotonic() < t0 + 60:
                time.sleep(0.05)
            ok, out = done(), "" if done() else self.text()[-300:]
        return {"ok": ok, "s": time.monotonic() - t0, "output": out}

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


def pycluster_launch(target: str, workers: int, port: int, policy: str, preload: bool = False) -> Launch:
    name = f"s{port}"
    argv = [PY, "-m", "pycluster.cli", "run", target, "-w", str(workers), "-b", f"{HOST}:{port}",
            "--policy", policy, "-n", name] + (["--preload"] if preload else [])
    return Launch(argv, rf"ready: {workers} workers?\b", 1, "pycluster", name)


def gunicorn_no_ctl() -> list[str]:
    """gunicorn >= 24 opens a control socket at one fixed path (~/.gunicorn/gunicorn.ctl): turn it off."""
    out = subprocess.run([PY, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30).stdout
    return ["--no-control-socket"] if "--no-control-socket" in out else []


def gunicorn_launch(args: list[str], workers: int, port: int) -> Launch:
    argv = [PY, "-m", "gunicorn", *GUNICORN_OPTS, "-w", str(workers), "-b", f"{HOST}:{port}", *args]
    return Launch(argv, r"Booting worker with pid", workers, "gunicorn")


def uvicorn_launch(target: str, workers: int, port: int) -> Launch:
    argv = [PY, "-m", "uvicorn", target, "--workers", str(workers), "--host", HOST, "--port", str(port),
            "--no-access-log"]
    return Launch(argv, r"Application startup complete", workers, "plain")


# -- measurements ------------------------------------------------------------------
GUNICORN_OPTS: list[str] = []
ERR_KEYS = ("err_connect", "err_read", "err_write", "err_timeout", "non2xx")


def reload_run(launch: Launch, port: int, duration: int, conns: int, logdir: str, tag: str) -> dict:
    srv = Running(launch, port, logdir, tag)
    try:
        srv.wait_ready()
        r = run_wrk(port, duration, conns=conns, threads=2, midrun=srv.reload)
    except Exception as exc:  # noqa: BLE001 - a stack that fails is a row with its reason
        return {"failed": str(exc).splitlines()[0][:120], "log": srv.logpath}
    finally:
        srv.stop()
    return {**{k: r[k] for k in ERR_KEYS}, "errors": r["errors"], "requests": r["requests"], "reload": r["mid"],
            "log": srv.logpath, "wrk": r.get("wrk_output")}


def rps_run(launch: Launch, port: int, duration: int, logdir: str, tag: str) -> dict:
    srv = Running(launch, port, logdir, tag)
    try:
        srv.wait_ready()
        ka = run_wrk(port, duration, conns=32, threads=2)
        cl = run_wrk(port, duration, conns=32, threads=2, close=True)
    except Exception as exc:  # noqa: BLE001
        return {"failed": str(exc).splitlines()[0][:120], "log": srv.logpath}
    finally:
        srv.stop()
    return {"ka": ka["rps"], "ka_err": ka["errors"], "close": cl["rps"], "close_err": cl["errors"]}


def fmt_runs(runs: list[dict]) -> tuple[str, str, str, str]:
    """-> (each run 'errors [c/r/w/t/n]', median errors, median requests, median reload s)."""
    good = [r for r in runs if "failed" not in r]
    each = "; ".join(f"failed: {r['failed']}" if "failed" in r else
                     f"{r['errors']} [{'/'.join(str(r[k]) for k in ERR_KEYS)}]" for r in runs)
    if not good:
        return each, "-", "-", "-"
    reloads = [r["reload"]["s"] for r in good if r["reload"] and r["reload"]["ok"]]
    bad = [r["reload"]["output"] for r in good if r["reload"] and not r["reload"]["ok"]]
    rl = f"{statistics.median(reloads):.1f}" if reloads else "-"
    if bad:
        rl += f" (reload failed: {bad[0]!r})"
    reqs = statistics.median([r["requests"] or 0 for r in good])
    return each, f"{statistics.median([r['errors'] for r in good]):g}", f"{reqs:.0f}", rl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short run per row")
    ap.add_argument("--runs", type=int, default=None, help="runs per reload row (default 1 quick, 3 otherwise)")
    ap.add_argument("--only", default="self,gunicorn,served,rps", help="rows: self,gunicorn,served,rps")
    ap.add_argument("--stacks", default=None,
                    help="only the rows whose stack name contains one of these (comma-separated, e.g. uvicorn,aiohttp)")
    ap.add_argument("--logs", default=None, help="keep every server's log in DIR (default: a temp dir, removed)")
    args = ap.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    d_small, d_big, d_rps = (4, 6, 3) if args.quick else (8, 10, 5)
    rows = set(args.only.split(","))
    if WRK is None:
        print("wrk is not installed (apt-get install wrk): nothing to measure")
        return 1
    precompile()
    if importlib.util.find_spec("gunicorn"):
        GUNICORN_OPTS[:] = gunicorn_no_ctl()
    logdir = args.logs or tempfile.mkdtemp(prefix="pyc-stacks-logs-")
    os.makedirs(logdir, exist_ok=True)
    notes: list[str] = []
    table: list[tuple[str, ...]] = []

    wanted = [w.strip().lower() for w in args.stacks.split(",")] if args.stacks else None

    def measure(group: str, stack: str, policy: str, make: Callable[[int], Launch], duration: int, conns: int) -> None:
        if wanted is not None and not any(w in stack.lower() for w in wanted):
            return
        res = []
        for i in range(runs):
            port = free_port()
            tag = re.sub(r"[^a-z0-9]+", "-", f"{group}-{stack}-{policy}-{i}".lower())
            res.append(reload_run(make(port), port, duration, conns, logdir, tag))
        each, med, reqs, rl = fmt_runs(res)
        table.append((group, stack, policy, f"-c{conns} -d{duration}s", reqs, each, med, rl))
        print(f"  {group} | {stack} | {policy}: {each}", file=sys.stderr, flush=True)

    if "self" in rows:
        for stack, (mods, target) in SELF_RUN.items():
            if miss := missing(mods):
                notes.append(f"self-run {stack} skipped: {', '.join(miss)} not installed")
                continue
            for policy in ("rr", "none"):
                measure("pycluster, self-run", stack, policy,
                        lambda p, t=target, pol=policy: pycluster_launch(t, 4, p, pol), d_small, 32)
    if "gunicorn" in rows:
        for stack, (mods, gargs) in gunicorn_rows().items():
            if miss := missing(mods):
                notes.append(f"gunicorn {stack} skipped: {', '.join(miss)} not installed")
                continue
            measure("gunicorn, HUP", stack, "-", lambda p, a=gargs: gunicorn_launch(a, 4, p), d_small, 32)
    serving = ("served" in rows or "rps" in rows) and serving_supported()
    if ("served" in rows or "rps" in rows) and not serving:
        notes.append("served and rps rows skipped: this checkout's `pycluster run` does not serve ASGI/WSGI apps"
                     " (SPEC 8; no --interface)")
    if "served" in rows and serving:
        for stack, mods, target in (("FastAPI", ("fastapi",), "fastapi_app:app"), ("Flask", ("flask",), "flask_app:app")):
            if miss := missing(mods):
                notes.append(f"served {stack} skipped: {', '.join(miss)} not installed")
                continue
            for policy in ("rr", "none"):
                for preload in (False, True):
                    measure("pycluster, served", stack, policy + (" --preload" if preload else ""),
                            lambda p, t=target, pol=policy, pre=preload: pycluster_launch(t, 8, p, pol, pre),
                            d_big, 64)
    rps_table: list[tuple[str, ...]] = []
    if "rps" in rows and serving:
        uw = uvicorn_worker()
        cands: list[tuple[str, str, tuple[str, ...], Callable[[int], Launch]]] = [
            ("FastAPI", "pycluster run fastapi_app:app -w 2", ("fastapi",),
             lambda p: pycluster_launch("fastapi_app:app", 2, p, "rr")),
            ("FastAPI", "pycluster run fastapi_app:app -w 2 --policy none", ("fastapi",),
             lambda p: pycluster_launch("fastapi_app:app", 2, p, "none")),
            ("FastAPI", "uvicorn --workers 2", ("fastapi", "uvicorn"), lambda p: uvicorn_launch("fastapi_app:app", 2, p)),
            ("FastAPI", f"gunicorn -k {uw} -w 2", ("fastapi", "gunicorn") if uw else ("uvicorn_worker",),
             lambda p: gunicorn_launch(["-k", str(uw), "fastapi_app:app"], 2, p)),
            ("Flask", "pycluster run flask_app:app -w 2", ("flask",),
             lambda p: pycluster_launch("flask_app:app", 2, p, "rr")),
            ("Flask", "pycluster run flask_app:app -w 2 --policy none", ("flask",),
             lambda p: pycluster_launch("flask_app:app", 2, p, "none")),
            ("Flask", "gunicorn -k gthread --threads 4 -w 2", ("flask", "gunicorn"),
             lambda p: gunicorn_launch(["-k", "gthread", "--threads", "4", "flask_app:app"], 2, p)),
            ("Flask", "gunicorn -k sync -w 2", ("flask", "gunicorn"),
             lambda p: gunicorn_launch(["-k", "sync", "flask_app:app"], 2, p)),
        ]
        for app, server, mods, make in cands:
            if miss := missing(mods):
                notes.append(f"rps {app} / {server} skipped: {', '.join(miss)} not installed")
                continue
            port = free_port()
            r = rps_run(make(port), port, d_rps, logdir, re.sub(r"[^a-z0-9]+", "-", f"rps-{app}-{server}".lower()))
            if "failed" in r:
                rps_table.append((app, server, f"failed: {r['failed']}", "", "", ""))
            else:
                rps_table.append((app, server, f"{r['ka']:.0f}", str(r["ka_err"]), f"{r['close']:.0f}",
                                  str(r["close_err"])))
            print(f"  rps | {app} | {server}: {rps_table[-1][2:]}", file=sys.stderr, flush=True)

    print(f"\nKeep-alive reload errors per stack: `wrk -t2` keep-alive (connections and seconds: load), reload "
          f"half-way, {runs} run(s) per row, {os.cpu_count()} cores. errors = wrk's connect/read/write/timeout "
          "socket errors + non-2xx responses.\n")
    print("| server | stack | policy | load | requests (median) | errors per run [c/r/w/t/non-2xx] "
          "| median errors | reload (s) |")
    print("|---|---|---|---|---:|---|---:|---:|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if rps_table:
        print(f"\nServed-app req/s, 2 workers, `wrk -t2 -c32 -d{d_rps}s` (errors beside each)\n")
        print("| app | server | keep-alive req/s | errors | Connection: close req/s | errors |")
        print("|---|---|---:|---:|---:|---:|")
        for row in rps_table:
            print("| " + " | ".join(row) + " |")
    for note in notes:
        print(f"note: {note}")
    if args.logs:
        print(f"logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
