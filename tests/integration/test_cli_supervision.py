"""Supervision by ``pycluster run`` (SPEC section 4), with real signals.

A SIGKILLed worker is replaced (restart counted, the new pid serves); a crash
loop backs off exponentially (the gaps between restarts are measured) and is
shown as ``crash-looping``; SIGKILL of the master takes every worker down
within 1 s; a worker flooding stdout never slows ``status``; SIGQUIT and a
second SIGINT stop at once; ``--graceful-timeout`` bounds a graceful stop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import pytest

from cli_support import IDLE_APP, READY, STUBBORN_APP, group_pids, http_get, pid_gone, pyc, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"


def test_sigkilled_worker_is_replaced_and_the_new_one_serves(pyc, free_port):
    master = pyc.start(HELLO, "-w", "1", "-b", f"127.0.0.1:{free_port}")
    master.wait_ready()
    old = master.status()["workers"][0]
    assert http_get(free_port)[1]["x-pid"] == str(old["pid"])

    os.kill(old["pid"], signal.SIGKILL)
    status = master.wait_status(
        lambda st: st["workers"][0]["pid"] not in (None, old["pid"]) and st["workers"][0]["state"] == "listening",
        10, "a listening replacement worker")
    new = status["workers"][0]
    assert new["restarts"] == 1, new
    assert len(status["workers"]) == 1 and status["workers_wanted"] == 1
    assert isinstance(new["last_exit"], dict) and new["last_exit"].get("signal") == "SIGKILL", new
    assert pid_gone(old["pid"])
    code, headers, body = http_get(free_port)
    assert code == 200 and headers["x-pid"] == str(new["pid"]), (headers, body)


CRASHY_APP = """
    import os
    import sys
    import threading
    import time

    def forked_at() -> float:
        # When the master forked us (CLOCK_BOOTTIME, 10 ms ticks): free of interpreter start-up noise.
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")

    def main():
        if not os.path.exists(os.environ["CRASH_FLAG"]):
            threading.Event().wait()  # healthy until the test plants the flag
        time.sleep(0.1)
        with open(os.environ["CRASH_LOG"], "a") as fh:
            fh.write(f"{forked_at()} {time.clock_gettime(time.CLOCK_BOOTTIME)}\\n")
        sys.exit(1)
"""


def test_crash_loop_backs_off_exponentially(pyc):
    flag, log = pyc.dir / "crash.flag", pyc.dir / "crash.log"
    pyc.write("crashy_app.py", CRASHY_APP)
    master = pyc.start("crashy_app:main", "-w", "1", env={"CRASH_FLAG": flag, "CRASH_LOG": log})
    master.wait_ready()
    healthy = master.status()["workers"][0]["pid"]
    flag.touch()
    os.kill(healthy, signal.SIGKILL)  # its replacements all crash 0.1 s after start

    def runs() -> list[tuple[float, float]]:
        if not log.exists():
            return []
        return [tuple(map(float, ln.split())) for ln in log.read_text().splitlines() if ln.strip()]

    seen_states: set[str] = set()

    def five_crashes():
        seen_states.update(w["state"] for w in master.status()["workers"])
        return len(runs()) >= 5

    wait_until(five_crashes, 20, "five crashed workers", master.output)
    crashes = runs()[:5]
    # Gap = from one crash's exit to the fork of its replacement: the back-off delay (default
    # restart_delay 0.1 s, doubling). Measured on the kernel's fork time, not the app's start-up.
    gaps = [crashes[i + 1][0] - crashes[i][1] for i in range(4)]
    detail = f"gaps between restarts: {[round(g, 3) for g in gaps]}\n{master.output()}"
    assert gaps[0] >= 0.08, detail                           # restart_delay 0.1 s at least
    assert gaps[0] < gaps[1] < gaps[2] < gaps[3], detail
    for before, after in zip(gaps[1:], gaps[2:]):
        assert 1.4 < after / before < 2.6, detail            # doubling each time
    assert gaps[3] < 5.0, detail                             # from 0.1 s, not from the 30 s cap
    assert "crash-looping" in seen_states, f"states seen: {seen_states}\n{detail}"
    status = master.status()
    assert status["workers"][0]["restarts"] >= 5, status
    assert master.proc.poll() is None  # a crash loop after the first generation never ends the master


def test_sigkill_of_the_master_takes_every_worker_down_within_1s(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}")
    master.wait_ready()
    pids = [w["pid"] for w in master.status()["workers"]]
    os.kill(master.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: all(pid_gone(pid) for pid in pids), 1.0, "every worker to exit within 1 s of the master",
               lambda: f"still running: {[p for p in pids if not pid_gone(p)]}")
    assert time.monotonic() - killed < 1.0
    master.wait_exit(5)


FLOOD_APP = """
    import os
    import sys
    import threading

    def main():
        chunk = (("flood " * 16).strip() + "\\n").encode() * 1000  # ~100 kB of 100-byte lines
        out = sys.stdout.buffer
        total = 0
        while not os.path.exists(os.environ["FLOOD_STOP"]) and total < 400 * 2**20:
            out.write(chunk)
            out.flush()
            total += len(chunk)
        with open(os.environ["FLOOD_DONE"], "w") as fh:
            fh.write(str(total))
        threading.Event().wait()
"""


def test_flooding_worker_does_not_slow_status(pyc):
    import psutil
    stop, done = pyc.dir / "flood.stop", pyc.dir / "flood.done"
    pyc.write("flood_app.py", FLOOD_APP)
    master = pyc.start("flood_app:main", "-w", "1", env={"FLOOD_STOP": stop, "FLOOD_DONE": done})
    master.wait_ready()
    worker = psutil.Process(master.status()["workers"][0]["pid"])

    def written() -> int:
        return worker.io_counters().write_chars

    wait_until(lambda: written() > 2 * 2**20, 20, "the worker to start flooding", master.output)
    cli_times: list[float] = []   # `pycluster status --json` as a whole process
    reply_times: list[float] = []  # the master's own answer on the control socket
    deadline = time.monotonic() + 30
    while len(cli_times) < 3 or written() < 20 * 2**20:  # ask while the worker floods 20 MB
        assert time.monotonic() < deadline, f"the worker flooded only {written()} bytes in 30 s"
        before = written()
        started = time.monotonic()
        master.status()
        reply_times.append(time.monotonic() - started)
        started = time.monotonic()
        verb = pyc.cli("status", "-n", "app", "--json")
        cli_times.append(time.monotonic() - started)
        assert verb.returncode == 0, verb.stderr
        assert json.loads(verb.stdout)["workers"][0]["pid"] == worker.pid
        assert written() > before, "the flood stalled (the master stopped reading the worker's pipe)"
    stop.touch()
    wait_until(done.exists, 20, "the flood to end", master.output)
    total = int(done.read_text() or 0)
    assert total >= 20 * 2**20, f"only {total} bytes flooded while measuring"
    assert master.status()["workers"][0]["state"] in ("online", "listening")
    timings = f"status --json: {[round(t, 3) for t in cli_times]} s; master replies: " \
              f"{[round(t, 3) for t in reply_times]} s"
    assert max(reply_times) < 0.5, timings
    # A fresh interpreter can be delayed on a CPU-starved machine (the flood keeps two processes
    # busy): the median run must answer within 1 s, and none may take 2 s.
    assert sorted(cli_times)[len(cli_times) // 2] < 1.0, timings
    assert max(cli_times) < 2.0, timings
    wait_until(lambda: master.find_line(r"^\[worker 1\] flood flood"), 5, "flood lines forwarded with the prefix",
               master.output)


def test_sigquit_stops_at_once(pyc):
    pyc.write("stubborn_app.py", STUBBORN_APP)
    master = pyc.start("stubborn_app:main", "-w", "2")  # graceful_timeout: the default 30 s
    master.wait_ready()
    pids = [w["pid"] for w in master.status()["workers"]]
    os.kill(master.pid, signal.SIGQUIT)
    master.wait_exit(5)
    assert all(pid_gone(pid) for pid in pids)
    assert group_pids(master.pid) == []
    assert not master.control.exists()


def test_second_sigint_stops_at_once(pyc):
    pyc.write("stubborn_app.py", STUBBORN_APP)
    master = pyc.start("stubborn_app:main", "-w", "1")
    master.wait_ready()
    pid = master.status()["workers"][0]["pid"]
    os.kill(master.pid, signal.SIGINT)
    master.wait_line(r"stopping")
    # The stubborn worker ignores SIGTERM: a graceful stop would wait graceful_timeout (30 s).
    assert master.proc.poll() is None and not pid_gone(pid)
    os.kill(master.pid, signal.SIGINT)
    master.wait_exit(5)
    assert pid_gone(pid)
    assert group_pids(master.pid) == []


def test_graceful_timeout_bounds_a_graceful_stop(pyc):
    pyc.write("stubborn_app.py", STUBBORN_APP)
    master = pyc.start("stubborn_app:main", "-w", "1", "--graceful-timeout", "1")
    master.wait_ready()
    pid = master.status()["workers"][0]["pid"]
    started = time.monotonic()
    os.kill(master.pid, signal.SIGTERM)
    assert master.wait_exit(10) == 0, master.output()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, f"stopped after {elapsed:.2f}s with --graceful-timeout 1"
    assert pid_gone(pid)
    assert not master.control.exists()


def test_one_line_per_ready_worker_and_one_for_the_generation(pyc, free_port):
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        second_port = spare.getsockname()[1]
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "-b", f"127.0.0.1:{second_port}")
    assert master.wait_ready() == 2
    ready = [i for i, ln in enumerate(master.stdout) if re.search(r"worker \d+ \(pid \d+\) ready", ln)]
    summary = [i for i, ln in enumerate(master.stdout) if READY.search(ln)]
    assert len(ready) == 2 and len(summary) == 1, master.output()
    assert max(ready) < summary[0], "the generation line must follow every worker's line"
    line = master.stdout[summary[0]]
    assert str(free_port) in line and str(second_port) in line, line
    status = master.status()
    assert status["state"] == "running"
    assert [w["state"] for w in status["workers"]] == ["listening", "listening"]
    for port in (free_port, second_port):
        assert http_get(port)[0] == 200


def test_worker_listening_on_some_listeners_only_is_not_ready(pyc, free_port):
    """Ready = listening on EVERY master listener: one of two is not enough (exit 3 at boot)."""
    pyc.write("half_app.py", """
        import sys
        import threading

        import pycluster

        def main():
            sock = pycluster.listen()  # the master's first listener only
            print(f"half: listening on {sock.getsockname()} only", file=sys.stderr, flush=True)
            threading.Event().wait()
    """)
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        second_port = spare.getsockname()[1]
    master = pyc.run_to_end("half_app:main", "-w", "1", "-b", f"127.0.0.1:{free_port}",
                            "-b", f"127.0.0.1:{second_port}", "--boot-timeout", "1", timeout=20)
    assert master.proc.returncode == 3, master.output()
    assert "half: listening on" in "\n".join(master.stderr), master.output()
    assert not master.find_line(READY), master.output()


def test_sigusr1_reopens_the_log_file(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    log = pyc.dir / "cluster.log"
    master = pyc.start("idle_app:main", "-w", "1", "--log-file", log)
    wait_until(lambda: log.exists() and READY.search(log.read_text()), 15, "the ready line in the log file",
               master.output)
    rotated = log.rename(pyc.dir / "cluster.log.1")
    os.kill(master.pid, signal.SIGUSR1)
    wait_until(log.exists, 5, "SIGUSR1 to create a fresh log file", master.output)
    os.kill(master.pid, signal.SIGTTIN)  # makes the master log new lines
    wait_until(lambda: re.search(r"worker 2 .*ready", log.read_text()), 10, "new lines in the fresh log file",
               master.output)
    assert "[worker 1] idle worker up" in rotated.read_text()
    assert "worker 2" not in rotated.read_text(), "lines went on into the rotated file"


def test_script_target_runs_as_main_in_each_worker(pyc, free_port):
    """``pycluster run path/to/script.py``: a Node-style script's worker branch runs unchanged."""
    (pyc.dir / "site").mkdir()
    pyc.write("site/server.py", """
        import http.server
        import os

        import pycluster as cluster

        class Hello(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = f"script worker {cluster.worker.id} as {__name__}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        if cluster.is_primary:
            raise SystemExit("the primary branch must not run under pycluster run")
        http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hello).serve_forever()
    """)
    master = pyc.start("site/server.py", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--env", f"PORT={free_port}")
    assert master.wait_ready() == 2
    code, _, body = http_get(free_port)
    assert code == 200 and re.fullmatch(rb"script worker [12] as __main__", body), body
    assert master.status()["target"] == "site/server.py"
