"""The profiles behind the README's "Where an anchor still leads" (issue 14).

    python tests/bench/bench_profile.py [--only imports,memory] [--runs N]

imports  wall time of a fresh interpreter that only imports what a process
         of each kind imports (median of --runs): bare, with site, the
         pycluster master, a pycluster worker (demo app; Flask under cheroot),
         the gunicorn master, Flask alone. What separates launch to first 200
         from gunicorn's, where a gunicorn worker is a fork of its master.
memory   per process RSS / PSS / USS of 4 idle workers after a short load:
         pycluster --preload vs gunicorn sync on the demo-like hello
         (apps/bench_wsgi.py for gunicorn), and on Flask (gthread): where
         the PSS of all processes goes.

Installs nothing; needs gunicorn and flask importable for their rows (missing:
skipped, noted) and wrk for the warm-up load (else 50 plain GETs). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_http import HOST, WRK, free_port, http_get, precompile, pycluster_env, stop_group  # noqa: E402

APPS = os.path.join(HERE, "apps")
STACKS = os.path.join(APPS, "stacks")
PY = sys.executable
MIB = 2 ** 20

IMPORTS = [
    ("python -S -c pass (no site)", ["-S", "-c", "pass"]),
    ("python -c pass (site and this machine's .pth files)", ["-c", "pass"]),
    ("pycluster master's imports", ["-c", "import pycluster.cli, pycluster.cli.run, pycluster.master.arbiter"]),
    ("pycluster worker, demo app", ["-c", "import pycluster.child.entry, pycluster.examples.hello"]),
    ("pycluster worker, Flask under cheroot",
     ["-c", "import pycluster.child.entry, pycluster.serve.wsgi, cheroot.wsgi, flask_app"]),
    ("gunicorn master's imports", ["-c", "import gunicorn.app.wsgiapp, gunicorn.arbiter"]),
    ("Flask app alone", ["-c", "import flask_app"]),
]


def imports(runs: int, notes: list[str]) -> list[str]:
    env = pycluster_env()
    env["PYTHONPATH"] = os.pathsep.join([STACKS, env["PYTHONPATH"]])
    # A worker imports pycluster as a worker (no primary engine): the fork server's marker does that.
    worker_env = dict(env, PYCLUSTER_FORKSERVER_FD="-1")
    rows = ["| process | wall ms (median) |", "|---|---:|"]
    for label, argv in IMPORTS:
        times = []
        for _ in range(runs):
            t0 = time.monotonic()
            done = subprocess.run([PY, *argv], env=worker_env if "worker" in label else env,
                                  capture_output=True, text=True)
            times.append((time.monotonic() - t0) * 1000)
            if done.returncode:
                notes.append(f"{label}: {done.stderr.strip().splitlines()[-1:]}")
                break
        else:
            rows.append(f"| {label} | {statistics.median(times):.0f} |")
    return rows


def memory_of(label: str, argv: list[str], port: int, env: dict[str, str], cwd: str, notes: list[str]) -> list[str]:
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_get(port, 1.0)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                notes.append(f"{label}: no 200 (rc={proc.poll()})")
                return []
            time.sleep(0.05)
        if WRK:
            subprocess.run([WRK, "-t1", "-c16", "-d1s", f"http://{HOST}:{port}/"], capture_output=True)
        else:
            for _ in range(50):
                http_get(port)
        time.sleep(1.5)
        root = psutil.Process(proc.pid)
        rows, total = [], 0
        for p in [root, *root.children(recursive=True)]:
            m = p.memory_full_info()
            total += m.pss
            role = "master" if p.pid == root.pid else " ".join(p.cmdline()[1:3])
            rows.append(f"| {label} | {p.pid} {role} | {m.rss / MIB:.1f} | {m.pss / MIB:.1f} | {m.uss / MIB:.1f} |")
        rows.append(f"| {label} | **all** | | **{total / MIB:.1f}** | |")
        return rows
    finally:
        stop_group(proc)


def memory(notes: list[str]) -> list[str]:
    runtime = tempfile.mkdtemp(prefix="pyc-profile-")
    rows = ["| server | process | RSS MiB | PSS MiB | USS MiB |", "|---|---|---:|---:|---:|"]
    try:
        for label, target, gunicorn in (("demo app", "pycluster.examples.hello:main", ["bench_wsgi:app"]),
                                        ("Flask", "flask_app:app", ["-k", "gthread", "--threads", "4",
                                                                    "--chdir", STACKS, "flask_app:app"])):
            env = pycluster_env()
            env["PYTHONPATH"] = os.pathsep.join([STACKS, APPS, env["PYTHONPATH"]])
            env["PYCLUSTER_RUNTIME_DIR"] = runtime
            port = free_port()
            rows += memory_of(f"pycluster --preload, {label}",
                              [PY, "-m", "pycluster.cli", "run", target, "-w", "4", "-b", f"{HOST}:{port}",
                               "--preload", "-n", f"p{port}"], port, env, STACKS, notes)
            if shutil.which("gunicorn") is None and subprocess.run([PY, "-c", "import gunicorn"]).returncode:
                notes.append("gunicorn not importable: its rows skipped")
                continue
            port = free_port()
            rows += memory_of(f"gunicorn, {label}", [PY, "-m", "gunicorn", "-w", "4", "-b", f"{HOST}:{port}",
                                                     *gunicorn], port, env, APPS, notes)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="imports,memory", help="sections, comma-separated")
    ap.add_argument("--runs", type=int, default=7, help="runs per import row (median reported)")
    a = ap.parse_args()
    sections = [s for s in a.only.split(",") if s]
    if unknown := set(sections) - {"imports", "memory"}:
        ap.error(f"unknown sections {sorted(unknown)}; known: imports,memory")
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    precompile()
    notes: list[str] = []
    if "imports" in sections:
        print("\n".join(imports(a.runs, notes)) + "\n")
    if "memory" in sections:
        print("\n".join(memory(notes)) + "\n")
    for note in notes:
        print(f"- note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
