"""Workers' output and the log paths under faults (issue 12, the log items).

1. SIGUSR1 while the log file cannot be reopened (its directory was moved): the failure is
   logged, the master keeps writing to the file it has, and a later SIGUSR1 (the directory
   back) reopens it: the writer never dies.
2. A worker writing 200 MB without a newline, the master's stdout a pipe nobody reads and a
   ``logs -f`` client that reads nothing: the master's RSS grows < 32 MiB and it keeps
   answering ``status``; the over-long line is cut at 16 KiB, and the cut is counted.
3. 32 ``logs -f`` clients that hang up free their slots at once: ``status`` answers (not
   ``busy``) with no log line in between.
4. ``logs --lines 2000`` after 64 KiB lines: the reply is capped (< 2 MiB, how many lines were
   left out is said) and the client prints it; garbage from a (fake) master gets one error
   line and exit 1, never a traceback.
5. Terminal escapes from a worker (OSC 0 title, OSC 52 clipboard, CSI, C1) reach neither the
   master's output nor ``pycluster logs`` as control characters; UTF-8 text stays intact.
6. A worker that forks a daemon holding its stdout/stderr: 5 restarts leave the master's fd
   count where it was.
7. ``--log-file`` in a missing directory, a directory, or a file that cannot be written: one
   line naming --log-file, the path and the reason, exit 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from cli_support import CLI, IDLE_APP, exchange, pid_gone, pyc, untimed, wait_until  # noqa: F401  (pyc: fixture)
from test_faults import rss

pytestmark = pytest.mark.timeout(60)

MiB = 2 ** 20



def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_of(control) -> dict:
    replies, _ = exchange(control, b'{"cmd": "status"}\n', timeout=5)
    assert replies, "no reply to status"
    return replies[0]


def workers_up(control, n: int) -> dict | None:
    reply = status_of(control)
    st = reply.get("result") or {}
    live = [w for w in st.get("workers", []) if w["state"] in ("online", "listening") and w["pid"]]
    return st if reply.get("ok") and len(live) == n else None


# -- 1. SIGUSR1 with a log file that cannot be reopened ----------------------------------------------

def test_failed_reopen_is_logged_and_the_writer_keeps_going(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    logdir = pyc.dir / "logs"
    logdir.mkdir()
    log = logdir / "app.log"
    master = pyc.start("idle_app:main", "-w", "1", "--log-file", log)
    wait_until(lambda: "ready: 1 worker," in (log.read_text() if log.exists() else ""), 15,
               "the ready line in the log file", master.output)

    moved = pyc.dir / "logs.moved"
    logdir.rename(moved)  # logrotate gone wrong: the directory is not there any more
    os.kill(master.pid, signal.SIGUSR1)
    # The failure is in the master's in-memory log (and, the old file kept, in that file too).
    wait_until(lambda: "cannot reopen the log file" in (moved / "app.log").read_text(), 10,
               "the failed reopen to be logged in the file still open", master.output)
    logs = pyc.cli("logs", "-n", "app", "--lines", "50")
    assert any("cannot reopen the log file" in ln and str(log) in ln for ln in logs.stdout.splitlines()), logs
    # The writer is alive: a new line still reaches the (moved) file.
    assert master.request({"cmd": "scale", "workers": 2})["ok"]
    wait_until(lambda: "scale: 1 -> 2 workers" in (moved / "app.log").read_text(), 10,
               "a line written after the failed reopen", master.output)

    # The directory is back: the next SIGUSR1 reopens the path.
    logdir.mkdir()
    os.kill(master.pid, signal.SIGUSR1)
    wait_until(log.exists, 10, "the log file reopened at its path", master.output)
    assert master.request({"cmd": "scale", "workers": 1})["ok"]
    wait_until(lambda: "scale: 2 -> 1 worker\n" in log.read_text(), 10,
               "a line in the reopened file", master.output)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_failed_log_writes_are_counted_and_said_and_the_writer_recovers(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    log = pyc.dir / "app.log"
    real = pyc.dir / "real.log"
    log.symlink_to("/dev/full")  # every write: ENOSPC, a disk full
    master = pyc.start("idle_app:main", "-w", "1", "--log-file", log)
    master.wait_line(r"cannot write the log file .*No space left on device", stream="stderr", timeout=15)
    master.wait_status(lambda st: st["state"] == "running", 10, "the master running")
    log.unlink()
    log.symlink_to(real)  # space again (logrotate's new file)
    os.kill(master.pid, signal.SIGUSR1)
    wait_until(real.exists, 10, "the log file reopened", master.output)
    assert master.request({"cmd": "scale", "workers": 2})["ok"]
    wait_until(lambda: "scale: 1 -> 2 workers" in real.read_text(), 10, "a line in the new file", master.output)
    assert re.search(r"\[pycluster\] \d+ log lines lost: cannot write the log file", real.read_text()), \
        real.read_text()
    assert len([ln for ln in master.stderr if "cannot write the log file" in ln]) == 1, master.output()


# -- 2. a 200 MB line, nobody reading ----------------------------------------------------------------

NO_NEWLINE_APP = """
    import os
    import sys
    import threading

    import pycluster as cluster

    def main():
        if cluster.worker.id == 1:
            while not os.path.exists(os.environ["FLOOD_GO"]):
                threading.Event().wait(0.01)
            out = sys.stdout.buffer
            chunk = b"x" * (1 << 20)
            for _ in range(int(os.environ["FLOOD_MB"])):
                out.write(chunk)
                out.flush()
            out.write(b"\\n")
            # then long lines with newlines: each is cut at 16 KiB
            line = b"y" * (64 * 1024) + b"\\n"
            for _ in range(int(os.environ["LONG_LINES"])):
                out.write(line)
            out.flush()
            with open(os.environ["FLOOD_DONE"], "w") as fh:
                fh.write("done")
        threading.Event().wait()
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("output", ["stalled-stdout", "log-file"])
def test_a_200mb_line_with_stalled_readers_costs_bounded_memory(pyc, output):
    go, done, log = pyc.dir / "flood.go", pyc.dir / "flood.done", pyc.dir / "flood.log"
    pyc.write("flood_app.py", NO_NEWLINE_APP)
    control = pyc.runtime_dir / "app.sock"
    env = pyc.env({"FLOOD_GO": go, "FLOOD_DONE": done, "FLOOD_MB": 200, "LONG_LINES": 800})
    extra = ["--log-file", str(log)] if output == "log-file" else []
    # stdout: a pipe nobody reads (or unused: --log-file); stderr: a file.
    with open(pyc.dir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([*CLI, "run", "flood_app:main", "-w", "2", "-n", "app", "--graceful-timeout", "1",
                                 *extra], cwd=pyc.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True)
    pyc.verbs.append(proc)  # killed (its group) at the end of the test
    follower = None
    try:
        def details() -> str:
            return f"rc={proc.poll()}\n" + (pyc.dir / "stderr.txt").read_text()[-3000:]

        wait_until(lambda: control.exists() and workers_up(control, 2), 20, "2 workers up", details)
        # A `logs -f` client that never reads.
        follower = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        follower.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        follower.connect(str(control))
        follower.sendall(b'{"cmd": "logs", "lines": 0, "follow": true}\n')
        rss0 = rss(proc.pid)
        go.touch()
        peak = rss0
        answered = 0
        deadline = time.monotonic() + 60
        while not done.exists():
            assert time.monotonic() < deadline, f"the flood did not end in 60 s\n{details()}"
            peak = max(peak, rss(proc.pid))
            assert status_of(control)["ok"]
            answered += 1
        peak = max(peak, rss(proc.pid))
        st = status_of(control)
        assert st["ok"] and all(w["restarts"] == 0 for w in st["result"]["workers"]), st
        summary = f"master RSS {rss0 / MiB:.1f} -> peak {peak / MiB:.1f} MiB; {answered} status answers"
        print(summary)
        assert peak - rss0 < 32 * MiB, summary
        assert answered >= 3, summary
        # The 200 MB line is in the ring, cut at 16 KiB and with the cut counted.
        reply, _ = exchange(control, b'{"cmd": "logs", "lines": 2000}\n', timeout=10)
        lines = [e["line"] for e in reply[0]["result"]["lines"] if e.get("worker") == 1]
        assert all(len(ln) <= 16 * 1024 + 100 for ln in lines), max(map(len, lines))
        cut = [ln for ln in lines if ln.startswith("x")]
        if cut:  # (unless the long lines after it pushed it out of the ring)
            assert re.search(r"\d+ bytes cut", cut[0]), cut[0][-200:]
        assert any(ln.startswith("y") and re.search(r"\d+ bytes cut", ln) for ln in lines)
        if output == "log-file":
            assert log.stat().st_size < 32 * MiB, log.stat().st_size
    finally:
        if follower is not None:
            follower.close()


# -- 3. hung-up `logs -f` clients --------------------------------------------------------------------

def test_hung_up_followers_free_their_slots_at_once(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    socks = []
    try:
        for _ in range(32):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(master.control))
            s.sendall(b'{"cmd": "logs", "lines": 1, "follow": true}\n')
            socks.append(s)
        for s in socks:
            assert b"\n" in s.recv(65536)  # the first reply: each is a follower now
    finally:
        for s in socks:
            s.close()
    # No log line comes in between: the master must notice the hang-ups by itself.
    wait_until(lambda: status_of(master.control).get("ok"), 3, "status to answer (not busy)",
               lambda: json.dumps(status_of(master.control)))


# -- 4. a capped `logs` reply; a client that survives any reply ---------------------------------------

LONG_LINES_APP = """
    import sys
    import threading

    def main():
        line = "z" * (64 * 1024) + "\\n"
        for _ in range(1100):
            sys.stdout.write(line)
        sys.stdout.write("long lines done\\n")
        sys.stdout.flush()
        threading.Event().wait()
"""


def test_logs_reply_after_long_lines_is_capped_and_printed(pyc):
    pyc.write("long_app.py", LONG_LINES_APP)
    master = pyc.start("long_app:main", "-w", "1")
    master.wait_ready()
    master.wait_line(r"^\[worker 1\] long lines done$", timeout=30)
    started = time.monotonic()
    out = pyc.cli("logs", "-n", "app", "--lines", "2000", timeout=30)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert len(out.stdout) < 2 * MiB, f"{len(out.stdout)} bytes printed"
    assert "[worker 1] long lines done" in map(untimed, out.stdout.splitlines())
    assert re.search(r"\d+ earlier lines? left out", out.stderr), out.stderr
    assert took < 10, took


class FakeMaster:
    """A unix socket that answers every connection with the same raw bytes."""

    def __init__(self, path, answer: bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(5)
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


GARBAGE = {
    "truncated": b'{"ok": true, "result": {"lines": [{"line": "abc',
    "not-json": b"hello there\n",
    "a-list": b"[1, 2, 3]\n",
    "lines-not-a-list": b'{"ok": true, "result": {"lines": 42}}\n',
    "result-a-string": b'{"ok": true, "result": "what"}\n',
    "error-not-a-dict": b'{"ok": false, "error": "nope"}\n',
    "entries-odd": b'{"ok": true, "result": {"lines": [7, null, {"worker": [1], "line": {"a": 1}},'
                   b' {"worker": 1, "line": "ok \\ud800 line"}]}}\n',
    "nothing": b"",
}


@pytest.mark.parametrize("follow", [False, True], ids=["logs", "logs-f"])
def test_logs_client_survives_whatever_the_master_sends(pyc, follow):
    path = pyc.dir / "fake.sock"
    for name, answer in GARBAGE.items():
        if path.exists():
            path.unlink()
        fake = FakeMaster(path, answer)
        try:
            args = ["logs", "--control", path, *(["-f"] if follow else [])]
            out = pyc.cli(*args, timeout=10)
        finally:
            fake.close()
        assert "Traceback" not in out.stderr, (name, out.stderr)
        assert out.returncode in (0, 1, 3), (name, out.returncode, out.stderr)
        if out.returncode:
            assert len(out.stderr.strip().splitlines()) == 1, (name, out.stderr)
            assert out.stderr.startswith("pycluster: "), (name, out.stderr)


# -- 5. terminal escapes -----------------------------------------------------------------------------

ESCAPES_APP = """
    import sys
    import threading

    def main():
        sys.stdout.write("title \\x1b]0;pwned\\x07 clip \\x1b]52;c;aGVsbG8=\\x07 red \\x1b[31m C1 \\x9b31m"
                         " bs \\x08 del \\x7f tab\\there h\\u00e9llo \\u2713 \\u65e5\\u672c end\\n")
        sys.stdout.write("escapes done\\n")
        sys.stdout.flush()
        threading.Event().wait()
"""

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _check_neutralised(line: str) -> None:
    assert not CONTROL_CHARS.search(line), repr(line)
    assert "\t" in line and "h\u00e9llo \u2713 \u65e5\u672c end" in line, repr(line)
    assert "\\x1b]0;pwned" in line and "\\x1b]52;c;" in line and "\\x9b31m" in line, repr(line)


def test_worker_escape_sequences_are_neutralised(pyc):
    pyc.write("esc_app.py", ESCAPES_APP)
    master = pyc.start("esc_app:main", "-w", "1")
    master.wait_ready()
    master.wait_line(r"^\[worker 1\] escapes done$")
    forwarded = master.find_line(r"^\[worker 1\] title").string
    _check_neutralised(forwarded)
    out = pyc.cli("logs", "-n", "app", "--lines", "10")
    assert out.returncode == 0, out.stderr
    shown = next(ln for ln in map(untimed, out.stdout.splitlines()) if ln.startswith("[worker 1] title"))
    _check_neutralised(shown)


def test_logs_client_neutralises_escapes_a_master_sends(pyc):
    path = pyc.dir / "fake.sock"
    entry = {"t": 1.0, "worker": 1, "stream": "stdout", "line": "a \x1b]0;pwned\x07 b \x9b c \u00e9\t."}
    fake = FakeMaster(path, json.dumps({"ok": True, "result": {"lines": [entry]}}).encode() + b"\n")
    try:
        out = pyc.cli("logs", "--control", path, timeout=10)
    finally:
        fake.close()
    assert out.returncode == 0, out.stderr
    assert untimed(out.stdout) == "[worker 1] a \\x1b]0;pwned\\x07 b \\x9b c \u00e9\t.\n", repr(out.stdout)


# -- 6. a daemon holding a dead worker's stdout/stderr ------------------------------------------------

DAEMON_APP = """
    import os
    import threading
    import time

    def main():
        if os.fork() == 0:
            # A daemon that keeps stdout and stderr (and nothing else), for a while.
            os.closerange(3, 1024)
            try:
                time.sleep(60)
            finally:
                os._exit(0)
        print("worker with a daemon up", flush=True)
        threading.Event().wait()
"""


def test_restarts_with_a_daemon_holding_the_pipes_leak_no_master_fd(pyc):
    pyc.write("daemon_app.py", DAEMON_APP)
    master = pyc.start("daemon_app:main", "-w", "1", "--min-uptime", "0")
    master.wait_ready()

    def one_worker() -> dict:
        return master.wait_status(lambda st: len(st["workers"]) == 1 and st["workers"][0]["state"]
                                  in ("online", "listening"), 10, "the worker up")["workers"][0]

    def restart() -> None:
        pid = one_worker()["pid"]
        os.kill(pid, signal.SIGKILL)
        master.wait_status(lambda st: st["workers"] and st["workers"][0]["pid"] not in (None, pid)
                           and st["workers"][0]["state"] in ("online", "listening"), 10, "a replacement")

    restart()  # the first restart sets any lazily created fd
    base = fd_count(master.pid)
    for _ in range(5):
        restart()
    # Closing happens when the exit is handled; allow the loop a moment to get there.
    wait_until(lambda: fd_count(master.pid) <= base, 3, f"the master's fd count back to {base}",
               lambda: "\n".join(sorted(os.listdir(f"/proc/{master.pid}/fd"))) + master.output())


# -- 7. --log-file that cannot be written -------------------------------------------------------------

def _unwritable_file(tmp) -> str:
    if os.geteuid() != 0:
        path = tmp / "readonly.log"
        path.write_text("")
        path.chmod(0o444)
        return str(path)
    # root writes any file mode; a read-only sysfs attribute refuses even root.
    for candidate in ("/sys/devices/system/cpu/online", "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"):
        if os.path.isfile(candidate):
            return candidate
    pytest.skip("no file that root cannot write")


@pytest.mark.parametrize("case", ["missing-dir", "a-directory", "unwritable"])
def test_unusable_log_file_is_a_config_error(pyc, case):
    pyc.write("idle_app.py", IDLE_APP)
    path = {"missing-dir": lambda: str(pyc.dir / "no" / "such" / "app.log"),
            "a-directory": lambda: str(pyc.dir),
            "unwritable": lambda: _unwritable_file(pyc.dir)}[case]()
    master = pyc.run_to_end("idle_app:main", "-w", "1", "--log-file", path)
    rc = master.proc.returncode
    err = [ln for ln in master.stderr if ln.strip()]
    assert rc == 2, master.output()
    assert len(err) == 1, master.output()
    assert "--log-file" in err[0] and path in err[0], err
    reason = {"missing-dir": "no such directory", "a-directory": "is a directory",
              "unwritable": "ermission denied|ead-only"}[case]
    assert re.search(reason, err[0], re.I), err
