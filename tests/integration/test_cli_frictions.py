"""Small frictions of the control verbs (issue 15, item 6): ``scale`` limits,
"1 worker" in every count, ``top`` off a terminal, ``logs -n 5``, ``status
--help`` wording, and the last line of a foreground ``run``."""

from __future__ import annotations

import re
import signal

import pytest

from cli_support import IDLE_APP, pyc, wait_until  # noqa: F401 (pyc is a fixture)

pytestmark = pytest.mark.timeout(60)


def test_scale_0_pauses_and_a_relative_scale_below_0_is_refused_with_the_numbers(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "2")
    master.wait_ready()
    below = pyc.cli("scale", "-n", "app", "-5")
    assert below.returncode == 1, (below.stdout, below.stderr)
    assert "2 - 5 = -3" in below.stderr and "scale 0" in below.stderr, below.stderr
    above = pyc.cli("scale", "-n", "app", "+5000")
    assert above.returncode == 1 and "4096" in above.stderr, above.stderr
    assert master.status()["workers_wanted"] == 2

    paused = pyc.cli("scale", "-n", "app", "0")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "workers: 2 -> 0 (paused: no worker runs until you scale up)", paused.stdout
    master.wait_status(lambda st: st["workers"] == [], 10, "no worker left")
    wait_until(lambda: master.find_line(r"\[pycluster\] scale: 2 -> 0 workers \(paused\)"), 5, "the log line",
               master.output)
    again = pyc.cli("scale", "-n", "app", "-1")
    assert again.returncode == 1 and "0 - 1 = -1" in again.stderr, again.stderr


def test_a_count_of_one_is_one_worker(pyc, free_port):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    assert master.wait_ready() == 1
    assert master.find_line(r"app ready: 1 worker, policy")
    listing = pyc.cli("list")
    assert "\t1 worker\t" in listing.stdout, listing.stdout
    reload = pyc.cli("reload", "-n", "app", timeout=30)
    assert reload.returncode == 0, reload.stderr
    assert re.search(r"reloaded: generation 2, 1 worker in", reload.stdout), reload.stdout
    master.wait_line(r"reload complete: generation 2, 1 worker replaced", 5)
    assert pyc.cli("scale", "-n", "app", "2").returncode == 0
    assert pyc.cli("scale", "-n", "app", "1").returncode == 0
    master.wait_line(r"\[pycluster\] scale: 2 -> 1 worker$", 5)
    assert not [line for line in master.stdout if re.search(r"\b1 workers\b", line)], master.output()


def test_top_off_a_terminal_prints_one_snapshot_and_exits(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "2")
    master.wait_ready()
    top = pyc.cli("top", "-n", "app", timeout=10)  # stdout is a pipe
    assert top.returncode == 0, top.stderr
    assert "app" in top.stdout and str(master.pid) in top.stdout, top.stdout
    gone = pyc.cli("top", "-n", "nosuch", timeout=10)
    assert gone.returncode == 3, (gone.stdout, gone.stderr)


def test_logs_with_a_number_for_a_name_hints_at_lines(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    done = pyc.cli("logs", "-n", "5", timeout=10)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "--lines 5" in done.stderr, done.stderr
    # a master that is really named 5 is still found by -n 5
    five = pyc.start("idle_app:main", "-w", "1", name="5")
    five.wait_ready()
    logs = pyc.cli("logs", "-n", "5", "--lines", "3", timeout=10)
    assert logs.returncode == 0 and logs.stdout.count("\n") <= 3 and "ready" in logs.stdout, logs


def test_status_help_speaks_to_users(pyc):
    shown = pyc.cli("status", "--help")
    assert shown.returncode == 0
    assert "SPEC" not in shown.stdout and "--check" in shown.stdout, shown.stdout


def test_a_foreground_run_ends_with_a_stopped_line(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    master.proc.send_signal(signal.SIGTERM)
    assert master.wait_exit(15) == 0, master.output()
    assert master.stdout[-1] == "[pycluster] app: stopped (exit 0)", master.output()
