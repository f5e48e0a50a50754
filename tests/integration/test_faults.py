"""Fault injection against a real ``pycluster run`` master (issue 7, item 1).

Each test starts a real master on 127.0.0.1 (the demo app unless it says
otherwise), breaks something on purpose and checks an exact criterion:

1. 100 SIGKILLs of random workers under load: no zombie child outlives a
   moment, 4 workers serve again, the master's fd count is unchanged and its
   RSS grew < 5 MiB.
2. A SIGSTOPped worker is found by the heartbeat (``--timeout 2``), killed,
   named in the log and replaced.
3. SIGKILL of the master: no worker survives it by 1 s; a new master with the
   same name and port starts at once over the stale control socket, serves,
   and its ``run`` exits 0 on ``stop``.
4. RR hand-offs queued to a SIGSTOPped worker that is then SIGKILLed are all
   answered by another worker.
5. fd exhaustion in the master (a low RLIMIT_NOFILE set with prlimit): it
   logs the accept failure, pauses accepts, answers the control socket again
   and serves every connection once fds free up; connections the stall
   watchdog takes back while the master has no free fd are not lost.
6. 100 MB of stdout from one worker: ``status`` round trips stay fast (median
   < 50 ms, p95 < 250 ms, max < 250 ms once the time the master and the probe
   waited for a CPU is taken out) and the master's RSS grows < 16 MiB;
   with a stalled log output, worker lines are dropped (counted) but the
   master's own lines are not.
7. A burst of 100 SIGHUP/SIGTTIN/SIGTTOU: reloads never overlap, the final
   worker count is initial + #TTIN - #TTOU (clamped at 0 step by step), all of
   the newest generation, serving, and no untracked child is left.
8. Scale up and scale down while a reload runs: the right number of workers,
   all of the newest generation, serving, no untracked child.
9. 20 consecutive reloads: the master's fd and thread counts return to the
   baseline and its RSS grows < 5 MiB.
10. The whole group SIGSTOPped (``docker pause``) for 3 x ``--timeout``: on
    resume no healthy worker is aborted (the master notices its own late tick).
11. A ``reload --wait`` client that hangs up after the first progress line:
    the reload still replaces every worker.

Waits are condition polls with deadlines; nothing sleeps for synchronisation.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from cli_support import (  # noqa: F401  (pyc)
    POLL,
    ThreadedLoad,
    exchange,
    group_pids,
    http_get,
    pid_gone,
    pyc,
    untimed,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"
MiB = 2 ** 20


# -- looking at the master from /proc --------------------------------------------------------------

def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_table(pid: int) -> list[str]:
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def children(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                pids.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return pids


def zombies(pid: int) -> list[int]:
    return [c for c in children(pid) if _state(c) == "Z"]


def live_children(pid: int) -> list[int]:
    return [c for c in children(pid) if _state(c) not in (None, "Z", "X")]


def pending_signals(pid: int) -> int:
    """The process's pending signals (process-wide and every thread's), as a bit mask."""
    mask = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith(("SigPnd:", "ShdPnd:")):
                        mask |= int(line.split()[1], 16)
        except OSError:
            continue
    return mask


def at_rest(read, samples: int = 10) -> int:
    """The smallest of a few readings ``POLL`` apart: the count at rest, without a control
    connection the master is still closing."""
    values = []
    for _ in range(samples):
        values.append(read())
        time.sleep(POLL)
    return min(values)


def settled(read, want, timeout: float, what: str, details=lambda: ""):
    """Poll ``read()`` until it equals ``want``; fail with the last value."""
    last = {}

    def check():
        last["v"] = read()
        return last["v"] == want

    wait_until(check, timeout, what, lambda: f"last value {last.get('v')!r}, wanted {want!r}\n{details()}")


# -- clients ----------------------------------------------------------------------------------------

class Load(ThreadedLoad):
    """Threads doing GETs in a loop (keep-alive, or a connection per request); outcomes counted.

    Failures are expected while workers are being killed (their own in-flight requests);
    the tests that use this only require that traffic keeps flowing."""

    def __init__(self, port: int, threads: int = 2, keep_alive: bool = True):
        self.port = port
        self.keep_alive = keep_alive
        self.ok = 0
        self.failed = 0
        self.examples: list[str] = []
        self.pids: set[int] = set()
        super().__init__(threads)

    def done(self) -> int:
        with self.lock:
            return self.ok + self.failed

    def _run(self) -> None:
        conn = None
        headers = {} if self.keep_alive else {"Connection": "close"}
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/", headers=headers)
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.pids.add(int(resp.getheader("X-Pid", "0")))
                    else:
                        self.failed += 1
                if resp.will_close:
                    conn.close()
                    conn = None
                continue
            except Exception as exc:  # noqa: BLE001 - every lost request counts
                with self.lock:
                    self.failed += 1
                    if len(self.examples) < 5:
                        self.examples.append(repr(exc))
            conn.close()
            conn = None
        if conn is not None:
            conn.close()


def raw_requests(port: int, n: int) -> list[socket.socket]:
    """Open ``n`` connections and send one GET (Connection: close) on each; don't read yet."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        socks.append(sock)
    return socks


def read_answers(socks: list[socket.socket], timeout: float) -> list[tuple[int | None, int | None, str]]:
    """Read every connection to EOF (in threads); (status, X-Pid, error) per connection."""
    results: list = [None] * len(socks)

    def read(i: int, sock: socket.socket) -> None:
        sock.settimeout(timeout)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            results[i] = (None, None, repr(exc))
            return
        finally:
            sock.close()
        match = re.match(rb"HTTP/1\.1 (\d{3})", data)
        pid = re.search(rb"\r\nX-Pid: (\d+)", data)
        results[i] = (int(match.group(1)) if match else None, int(pid.group(1)) if pid else None,
                      "" if match else f"no response: {data[:80]!r}")

    threads = [threading.Thread(target=read, args=(i, s), daemon=True) for i, s in enumerate(socks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return results


def serving(port: int, pids: set[int], tries: int = 40) -> set[int]:
    """GET (a connection each) until every pid in ``pids`` answered; return the pids seen."""
    seen: set[int] = set()
    for _ in range(tries):
        code, headers, body = http_get(port)
        assert code == 200, (code, headers, body)
        seen.add(int(headers["x-pid"]))
        if pids <= seen:
            break
    return seen


def all_listening(st: dict, n: int) -> bool:
    return (st["state"] == "running" and st["workers_wanted"] == n and len(st["workers"]) == n
            and all(w["state"] == "listening" and w["pid"] for w in st["workers"]))


def request_lines(path, obj: dict, timeout: float = 30.0) -> list[dict]:
    """Send one control request; read reply lines until a final one (not a progress line)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    replies: list[dict] = []
    try:
        sock.connect(os.fspath(path))
        sock.sendall(json.dumps(obj).encode() + b"\n")
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return replies
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = json.loads(line)
                replies.append(reply)
                if not (reply.get("ok") and isinstance(reply.get("result"), dict)
                        and "progress" in reply["result"]):
                    return replies
    finally:
        sock.close()


# -- 1. 100 SIGKILLs under load --------------------------------------------------------------------

def test_100_sigkills_under_load_leave_no_zombie_and_no_leak(pyc, free_port):
    master = pyc.start(HELLO, "-w", "4", "-b", f"127.0.0.1:{free_port}", "--min-uptime", "0",
                       "--graceful-timeout", "2")
    assert master.wait_ready() == 4
    rng = random.Random(1)
    zombie_seen: dict[int, float] = {}
    old_zombies: list[int] = []

    def kill_one() -> None:
        st = master.status()
        victim = rng.choice(st["workers"])["pid"]
        os.kill(victim, signal.SIGKILL)

        def replaced():
            now = time.monotonic()
            for z in zombies(master.pid):
                first = zombie_seen.setdefault(z, now)
                if now - first > 1.0 and z not in old_zombies:
                    old_zombies.append(z)
            st = master.status()
            return all_listening(st, 4) and victim not in {w["pid"] for w in st["workers"]}

        wait_until(replaced, 10, f"worker pid {victim} replaced", master.output)

    for _ in range(5):  # warm-up: lazily imported code, allocator pools
        kill_one()
    settled(lambda: len(zombies(master.pid)), 0, 2, "no zombie after the warm-up")
    fds0, rss0, table0 = at_rest(lambda: fd_count(master.pid)), rss(master.pid), fd_table(master.pid)

    with Load(free_port, threads=1, keep_alive=True) as load, \
            Load(free_port, threads=1, keep_alive=False) as fresh:
        wait_until(lambda: load.ok > 50 and fresh.ok > 20, 10, "traffic flowing")
        started = time.monotonic()
        for _ in range(100):
            kill_one()
        elapsed = time.monotonic() - started
        at_end = load.ok + fresh.ok
        wait_until(lambda: load.ok + fresh.ok > at_end + 50, 10, "traffic still flowing after the kills",
                   lambda: f"{load.failed + fresh.failed} failed, e.g. {load.examples + fresh.examples}")

    assert not old_zombies, f"zombie children of the master older than 1 s: {old_zombies}"
    settled(lambda: len(zombies(master.pid)), 0, 1, "no zombie child of the master")
    st = master.status()
    assert all_listening(st, 4), st
    pids = {w["pid"] for w in st["workers"]}
    assert sorted(live_children(master.pid)) == sorted(pids), (live_children(master.pid), st)
    assert serving(free_port, pids) == pids
    growth = rss(master.pid) - rss0
    settled(lambda: fd_count(master.pid), fds0, 3, "the master's fd count back to its baseline",
            lambda: f"(RSS {growth / MiB:+.2f} MiB)\nbefore: {table0}\nafter:  {fd_table(master.pid)}")
    assert growth < 5 * MiB, f"master RSS grew {growth / MiB:.1f} MiB over 100 kills"
    assert sum(w["restarts"] for w in st["workers"]) == 105, st
    print(f"100 kills in {elapsed:.1f}s; {load.ok + fresh.ok} ok, {load.failed + fresh.failed} failed "
          f"requests; master RSS {growth / MiB:+.2f} MiB, fds {fds0}")


# -- 2. a SIGSTOPped worker is found by the heartbeat ------------------------------------------------

def test_sigstopped_worker_is_killed_by_the_heartbeat_and_replaced(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--timeout", "2")
    master.wait_ready()
    before = master.status()
    victim, other = before["workers"][0], before["workers"][1]
    os.kill(victim["pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        st = master.wait_status(lambda st: all_listening(st, 2)
                                and victim["pid"] not in {w["pid"] for w in st["workers"]},
                                15, "the stopped worker replaced")
    finally:
        if not pid_gone(victim["pid"]):
            os.kill(victim["pid"], signal.SIGKILL)
    took = time.monotonic() - stopped
    assert 1.0 < took < 10, f"replaced {took:.1f}s after SIGSTOP with --timeout 2"
    master.wait_line(rf"worker {victim['id']} \(pid {victim['pid']}\) sent no heartbeat", 5)
    wait_until(lambda: pid_gone(victim["pid"]) and victim["pid"] not in children(master.pid), 5,
               "the stopped worker reaped")
    by_pid = {w["pid"]: w for w in st["workers"]}
    assert other["pid"] in by_pid and by_pid[other["pid"]]["restarts"] == 0, st  # no false positive
    new = [w for w in st["workers"] if w["pid"] != other["pid"]][0]
    assert new["restarts"] == 1 and new["last_exit"] is not None, new
    # The replacement is listening; on a slow machine it may take a moment before the RR
    # hand-offs reach it: ask (bounded) until both pids answered, not in one immediate round.
    wait_until(lambda: serving(free_port, set(by_pid)) == set(by_pid), 10, "both workers answering")


# -- 3. SIGKILL of the master -------------------------------------------------------------------------

def test_sigkilled_master_leaves_no_worker_and_a_new_one_starts_at_once(pyc, free_port):
    args = (HELLO, "-w", "4", "-b", f"127.0.0.1:{free_port}")
    first = pyc.start(*args, name="phoenix")
    first.wait_ready()
    pids = [w["pid"] for w in first.status()["workers"]]
    # Open connections (some left idle on keep-alive) so the port has live sockets when it dies.
    idle = [http.client.HTTPConnection("127.0.0.1", free_port, timeout=5) for _ in range(4)]
    for conn in idle:
        conn.request("GET", "/")
        assert conn.getresponse().read().startswith(b"hello")
    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: all(pid_gone(p) for p in pids), 1.0, "every worker gone within 1 s of the master",
               lambda: f"still running: {[p for p in pids if not pid_gone(p)]}")
    assert time.monotonic() - killed < 1.0
    first.wait_exit(5)
    for conn in idle:
        conn.close()
    assert first.control.exists(), "expected the dead master's control socket to be left behind"

    started = time.monotonic()
    second = pyc.start(*args, name="phoenix")
    assert second.wait_ready(10) == 4
    took = time.monotonic() - started
    assert took < 5, f"the new master needed {took:.1f}s to be ready"
    text = "\n".join(second.stdout + second.stderr)
    assert not re.search(r"in use|retrying|cannot|Traceback", text, re.I), second.output()
    st = second.status()
    assert st["pid"] == second.pid and all_listening(st, 4), st
    new_pids = {w["pid"] for w in st["workers"]}
    assert serving(free_port, new_pids) == new_pids
    stop = pyc.cli("stop", "-n", "phoenix")
    assert stop.returncode == 0, stop.stderr
    assert second.wait_exit(10) == 0, second.output()
    assert not second.control.exists()
    wait_until(lambda: all(pid_gone(p) for p in new_pids), 5, "the new workers gone")


# -- 4. a hand-off target dies mid hand-off ---------------------------------------------------------

def test_handoffs_queued_to_a_worker_that_dies_are_answered_by_another(pyc, free_port):
    # A long hand-off timeout: the connections must come back because the worker died, not
    # because the stall watchdog took them.
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--policy", "rr",
                       "--min-uptime", "0", env={"PYCLUSTER_HANDOFF_TIMEOUT": "30"})
    master.wait_ready()
    st = master.status()
    victim = st["workers"][0]
    survivor = st["workers"][1]["pid"]
    handed_before = victim["connections"] or 0
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        socks = raw_requests(free_port, 24)

        def handed_to_victim():
            w = {w["pid"]: w for w in master.status()["workers"]}.get(victim["pid"])
            return w is not None and (w["connections"] or 0) > handed_before and w

        queued = wait_until(handed_to_victim, 5, "a hand-off queued to the stopped worker", master.output)
    finally:
        os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()
    answers = read_answers(socks, timeout=10)
    took = time.monotonic() - killed
    bad = [a for a in answers if a[0] != 200]
    assert not bad, f"{len(bad)} of {len(answers)} connections not answered: {bad[:5]}\n{master.output()}"
    pids = {a[1] for a in answers}
    assert victim["pid"] not in pids, pids
    assert survivor in pids
    assert took < 5, f"the queued connections took {took:.1f}s (the 30 s watchdog, not the death, freed them)"
    print(f"{queued['connections'] - handed_before} hand-off(s) were queued to the stopped worker")
    master.wait_status(lambda st: all_listening(st, 2), 10, "the dead worker replaced")


# -- 5. fd exhaustion in the master -------------------------------------------------------------------

CLIENTS = 200


def test_master_out_of_fds_logs_pauses_and_recovers(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2")
    master.wait_ready()
    pids = {w["pid"] for w in master.status()["workers"]}
    base = at_rest(lambda: fd_count(master.pid))
    _soft, hard = resource.prlimit(master.pid, resource.RLIMIT_NOFILE)
    limit = base + 10
    resource.prlimit(master.pid, resource.RLIMIT_NOFILE, (limit, hard))
    # With every worker stopped, each lane fills up (PYCLUSTER_RR_WINDOW, 64 hand-offs by default),
    # then accepted connections pile up in the master until it runs out of fds.
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        socks = raw_requests(free_port, CLIENTS)
        master.wait_line(r"accept\(\) on \S+ failed: Too many open files; pausing accepts", 10)
        assert fd_count(master.pid) >= limit - 2, (fd_count(master.pid), limit)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    answers = read_answers(socks, timeout=15)
    bad = [a for a in answers if a[0] != 200]
    assert not bad, f"{len(bad)} of {CLIENTS} connections lost after fd exhaustion: {bad[:5]}\n{master.output()}"
    wait_until(lambda: exchange(master.control, b'{"cmd": "status"}\n', timeout=2)[0], 5,
               "the control socket answering again")
    st = master.status()
    assert all_listening(st, 2) and {w["pid"] for w in st["workers"]} == pids, st
    assert serving(free_port, pids) == pids
    settled(lambda: fd_count(master.pid), base, 5, "the master's fds back to the baseline",
            lambda: "\n".join(fd_table(master.pid)))
    assert master.proc.poll() is None


def test_connections_taken_back_while_out_of_fds_are_not_lost(pyc, free_port):
    # The workers stall (SIGSTOP) with hand-offs in their lanes while the master is at its fd
    # limit: the connections the stall watchdog takes back (PYCLUSTER_HANDOFF_TIMEOUT=1) must
    # still be answered once the workers run again.
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2",
                       env={"PYCLUSTER_HANDOFF_TIMEOUT": "1"})
    master.wait_ready()
    pids = {w["pid"] for w in master.status()["workers"]}
    base = at_rest(lambda: fd_count(master.pid))
    _soft, hard = resource.prlimit(master.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(master.pid, resource.RLIMIT_NOFILE, (base + 10, hard))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        socks = raw_requests(free_port, CLIENTS)
        master.wait_line(r"Too many open files; pausing accepts", 10)
        master.wait_line(r"worker \d+ did not take \d+ connection", 10)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    answers = read_answers(socks, timeout=15)
    bad = [a for a in answers if a[0] != 200]
    assert not bad, (f"{len(bad)} of {CLIENTS} connections lost (taken back from a stalled worker while the"
                     f" master had no free fd): {bad[:3]}\n{master.output()}")


# -- 6. a 100 MB log flood ---------------------------------------------------------------------------

FLOOD_APP = """
    import os
    import sys
    import threading

    import pycluster as cluster

    def main():
        if cluster.worker.id == 1:
            go = threading.Event()
            while not os.path.exists(os.environ["FLOOD_GO"]):
                go.wait(0.01)
            chunk = (("flood " * 16).strip() + "\\n").encode() * 1000  # 100 kB of 96-byte lines
            out = sys.stdout.buffer
            total = 0
            while total < int(os.environ["FLOOD_BYTES"]):
                out.write(chunk)
                out.flush()
                total += len(chunk)
            with open(os.environ["FLOOD_DONE"], "w") as fh:
                fh.write(str(total))
        threading.Event().wait()
"""


# `status` requests back to back until the flood is over. For each: the round trip, and how long
# the master's main thread and this probe waited for a CPU meanwhile (schedstat run delay), so that
# time lost to other processes on a shared 2-core machine can be told from a slow master.
STATUS_PROBE = """
import json, os, socket, sys, time
path, done, out, master = sys.argv[1:5]
def run_delay(pid):
    with open(f"/proc/{pid}/task/{pid}/schedstat") as fh:
        return int(fh.read().split()[1]) / 1e9
times = []
while not os.path.exists(done):
    waits = run_delay(master), run_delay(os.getpid())
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b'{"cmd": "status"}\\n')
        data = b""
        while not data.endswith(b"\\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    took = time.monotonic() - started
    assert json.loads(data)["ok"], data
    times.append((took, run_delay(master) - waits[0], run_delay(os.getpid()) - waits[1]))
with open(out, "w") as fh:
    json.dump(times, fh)
"""


def test_100mb_log_flood_keeps_status_fast_and_memory_bounded(pyc):
    go, done, times_file = pyc.dir / "flood.go", pyc.dir / "flood.done", pyc.dir / "status.times"
    pyc.write("flood_app.py", FLOOD_APP)
    master = pyc.start("flood_app:main", "-w", "2", "--graceful-timeout", "2",
                       env={"FLOOD_BYTES": 100 * MiB, "FLOOD_GO": go, "FLOOD_DONE": done})
    master.wait_ready()
    rss0 = rss(master.pid)
    flooder = next(w["pid"] for w in master.status()["workers"] if w["id"] == 1)
    go.touch()
    wait_until(lambda: wchar(flooder) > MiB, 10, "the flood to start", master.output)
    # The round trips are timed in a separate process: this one is busy reading the master's output.
    probe = subprocess.Popen([sys.executable, "-c", STATUS_PROBE, str(master.control), str(done), str(times_file),
                              str(master.pid)])
    peak = rss0
    deadline = time.monotonic() + 45
    try:
        while probe.poll() is None:
            assert time.monotonic() < deadline, f"100 MB not flooded in 45 s\n{master.output()}"
            peak = max(peak, rss(master.pid))
            time.sleep(0.01)  # paces the RSS samples; not synchronisation
    finally:
        if probe.poll() is None:
            probe.kill()
        probe.wait(5)
    assert probe.returncode == 0, "the status probe failed"
    samples = json.loads(times_file.read_text())
    assert int(done.read_text()) >= 100 * MiB
    assert len(samples) >= 10, f"only {len(samples)} status requests during the flood"
    times = sorted(took for took, _master_wait, _probe_wait in samples)
    # Each round trip less the time the master and the probe waited for a CPU meanwhile.
    own = sorted(max(0.0, took - mw - pw) for took, mw, pw in samples)
    med, p95, worst = statistics.median(times), times[int(len(times) * 0.95)], times[-1]
    summary = (f"{len(times)} status round trips during 100 MB: median {med * 1000:.1f} ms, p95 {p95 * 1000:.1f}"
               f" ms, max {worst * 1000:.1f} ms (max {own[-1] * 1000:.1f} ms without CPU waits);"
               f" master RSS {rss0 / MiB:.1f} -> peak {peak / MiB:.1f} MiB")
    print(summary)
    # On a 2-core machine shared with other test runs a round trip can wait for a CPU for most of a
    # second (seen: 0.94 s at load average 6): the max is bounded once that wait is taken out.
    assert med < 0.05, summary
    assert p95 < 0.25, summary
    assert own[-1] < 0.25, summary
    assert peak - rss0 < 16 * MiB, summary
    st = master.status()
    assert all_listening_or_online(st, 2) and all(w["restarts"] == 0 for w in st["workers"]), st


def test_slow_log_output_drops_worker_lines_but_never_the_masters_own(pyc):
    # The log file is a FIFO nobody reads yet: the master's writer blocks, its queue fills up and
    # worker lines are dropped (and counted). The master's own lines (SPEC: `run` prints a line
    # per ready worker) must still come out once the output drains.
    go, done, fifo = pyc.dir / "flood.go", pyc.dir / "flood.done", pyc.dir / "log.fifo"
    pyc.write("flood_app.py", FLOOD_APP)
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        master = pyc.start("flood_app:main", "-w", "2", "--log-file", fifo, "--graceful-timeout", "2",
                           env={"FLOOD_BYTES": 4 * MiB, "FLOOD_GO": go, "FLOOD_DONE": done})
        wait_until(lambda: master.control.exists() or master._ended("its control socket"), 15,
                   "the control socket", master.output)
        master.wait_status(lambda st: all_listening_or_online(st, 2), 15, "2 workers up")
        go.touch()
        wait_until(done.exists, 20, "the flood (4 MB) to end", master.output)
        reply = master.request({"cmd": "scale", "workers": 3})
        assert reply["ok"], reply
        st = master.wait_status(lambda st: all_listening_or_online(st, 3), 10, "worker 3 up")
        new = next(w for w in st["workers"] if w["id"] == 3)
        wanted = ["[pycluster] scale: 2 -> 3 workers", f"[pycluster] worker 3 (pid {new['pid']}) ready"]
        text = b""

        def drained():
            nonlocal text
            while True:
                try:
                    chunk = os.read(reader, 1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                text += chunk
            lines = [untimed(ln) for ln in text.decode("utf-8", "replace").splitlines()]
            return all(w in lines for w in wanted)

        end = time.monotonic() + 10
        while not drained() and time.monotonic() < end:
            time.sleep(POLL)
        lines = [untimed(ln) for ln in text.decode("utf-8", "replace").splitlines()]
        dropped = [line for line in lines if re.fullmatch(r"\[pycluster\] \d+ log lines dropped.*", line)]
        assert dropped, f"no drop counter in {len(lines)} lines read (was the output ever too slow?)"
        missing = [w for w in wanted if w not in lines]
        assert not missing, (f"the master's own lines were dropped with the flood: {missing}; read {len(lines)}"
                             f" lines, {len(dropped)} drop counters, last: {lines[-3:]}")
    finally:
        os.close(reader)


def wchar(pid: int) -> int:
    """Bytes the process has written so far (/proc/PID/io)."""
    with open(f"/proc/{pid}/io") as fh:
        return int(next(line for line in fh if line.startswith("wchar:")).split()[1])


def all_listening_or_online(st: dict, n: int) -> bool:
    return (st["state"] == "running" and len(st["workers"]) == n
            and all(w["state"] in ("online", "listening") for w in st["workers"]))


# -- 7. signal storm --------------------------------------------------------------------------------

def test_signal_storm_of_hup_ttin_ttou(pyc, free_port):
    initial = 3
    master = pyc.start(HELLO, "-w", str(initial), "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2")
    master.wait_ready()
    storm = [signal.SIGHUP] * 34 + [signal.SIGTTIN] * 33 + [signal.SIGTTOU] * 33
    random.Random(7).shuffle(storm)
    expected = initial
    for sig in storm:  # scale clamps at 0 on every step
        expected = max(0, expected + {signal.SIGTTIN: 1, signal.SIGTTOU: -1}.get(sig, 0))
    # Identical standard signals still pending coalesce in the kernel: send the next one as soon as
    # the previous one has been delivered (left the pending set), microseconds later.
    started = time.monotonic()
    for sig in storm:
        os.kill(master.pid, sig)
        wait_until(lambda: not pending_signals(master.pid) & (1 << (sig - 1)), 2, f"{sig!r} delivered")
    burst = time.monotonic() - started

    st = master.wait_status(lambda st: st["state"] == "running" and all_listening(st, expected)
                            and len({w["generation"] for w in st["workers"]} | {st["generation"]}) == 1
                            and sorted(live_children(master.pid)) == sorted(w["pid"] for w in st["workers"]),
                            15, f"{expected} workers of one (the newest) generation and no other child")
    log = [line for line in master.stdout if line.startswith("[pycluster]")]
    completed = [int(m.group(1)) for m in map(re.compile(r"reload complete: generation (\d+)").search, log) if m]
    assert completed == list(range(2, 2 + len(completed))), completed  # one at a time, none overlapping
    assert st["generation"] == 1 + len(completed), (st["generation"], completed)
    assert completed, "no reload ran"
    assert not [line for line in log if "aborted" in line or "Traceback" in line], log
    assert not [line for line in master.stderr if "Traceback" in line], master.output()
    pids = {w["pid"] for w in st["workers"]}
    if expected:
        assert serving(free_port, pids) == pids
    print(f"100 signals in {burst * 1000:.0f} ms; {len(completed)} reloads ran; {expected} workers")


# -- 8. scale during a reload -----------------------------------------------------------------------

SLOW_HELLO = """
    import time
    time.sleep(0.4)  # a slower boot: the reload lasts long enough to scale in the middle of it
    from pycluster.examples.hello import main
"""


def test_scale_up_and_down_during_a_reload(pyc, free_port):
    pyc.write("slowhello.py", SLOW_HELLO)
    master = pyc.start("slowhello:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2")
    master.wait_ready()

    for generation, target in ((2, 4), (3, 1)):
        reply = master.request({"cmd": "reload", "wait": False})
        assert reply["ok"], reply
        assert master.status()["state"] == "reloading"
        reply = master.request({"cmd": "scale", "workers": target})
        assert reply["ok"] and reply["result"]["workers_wanted"] == target, reply
        assert master.status()["state"] == "reloading", "the scale did not land during the reload"

        def done(st):
            return (all_listening(st, target) and st["generation"] == generation
                    and all(w["generation"] == generation for w in st["workers"])
                    and sorted(live_children(master.pid)) == sorted(w["pid"] for w in st["workers"]))

        st = master.wait_status(done, 10, f"{target} workers, all of generation {generation}, no other child")
        pids = {w["pid"] for w in st["workers"]}
        assert serving(free_port, pids) == pids


# -- 9. 20 reloads do not leak ----------------------------------------------------------------------

def test_20_reloads_leave_fds_threads_and_rss_flat(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2")
    master.wait_ready()

    def reload_once() -> None:
        replies = request_lines(master.control, {"cmd": "reload", "wait": True})
        assert replies and replies[-1]["ok"] and replies[-1]["result"].get("ok"), replies
        st = master.wait_status(lambda st: all_listening(st, 2), 10, "2 workers after the reload")
        pids = sorted(w["pid"] for w in st["workers"])
        wait_until(lambda: sorted(live_children(master.pid)) == pids, 10, "the old workers gone",
                   lambda: f"children {live_children(master.pid)}, workers {pids}")

    with Load(free_port, threads=1) as load:
        wait_until(lambda: load.ok > 20, 10, "traffic flowing")
        for _ in range(2):  # warm-up
            reload_once()
        fds0, table0 = at_rest(lambda: fd_count(master.pid)), fd_table(master.pid)
        threads0, rss0 = thread_count(master.pid), rss(master.pid)
        started = time.monotonic()
        for _ in range(20):
            reload_once()
        elapsed = time.monotonic() - started
    assert master.status()["generation"] == 23
    assert load.failed == 0, f"{load.failed} requests failed during the reloads: {load.examples}"
    growth = rss(master.pid) - rss0
    settled(lambda: fd_count(master.pid), fds0, 3, "the master's fd count back to its baseline",
            lambda: f"(RSS {growth / MiB:+.2f} MiB, threads {thread_count(master.pid)} vs {threads0})\n"
                    f"before: {table0}\nafter:  {fd_table(master.pid)}")
    settled(lambda: thread_count(master.pid), threads0, 3, "the master's thread count back to its baseline")
    assert growth < 5 * MiB, f"master RSS grew {growth / MiB:.1f} MiB over 20 reloads"
    print(f"20 reloads in {elapsed:.1f}s; fds {fds0}, threads {threads0}, RSS {growth / MiB:+.2f} MiB")


# -- 10. the whole group paused (docker pause) under --timeout (issue 12, item 5) -------------------

def test_a_paused_group_resumes_without_aborting_healthy_workers(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--timeout", "1")
    master.wait_ready()
    before = master.status()
    pids = {w["pid"] for w in before["workers"]}
    assert len(group_pids(master.pid)) == 3, group_pids(master.pid)  # the master and its 2 workers
    os.killpg(master.pid, signal.SIGSTOP)  # `docker pause`: the master and its workers at once
    try:
        wait_until(lambda: all(_state(p) == "T" for p in pids | {master.pid}), 5, "the group stopped")
        time.sleep(3)  # the fault itself: 3 x --timeout of silence from everyone
    finally:
        os.killpg(master.pid, signal.SIGCONT)
    master.wait_line(r"heartbeat check ran [\d.]+s late", 5)
    # Two timeouts after the resume, the same workers serve, none was aborted or restarted.
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        st = master.status()
        assert {w["pid"] for w in st["workers"]} == pids and all(w["restarts"] == 0 for w in st["workers"]), st
        time.sleep(0.1)
    assert not master.find_line(r"sent no heartbeat"), master.output()
    assert serving(free_port, pids) == pids


# -- 11. a reload client that hangs up (issue 12, item 12) -------------------------------------------

def test_a_reload_client_that_hangs_up_does_not_stop_the_reload(pyc, free_port):
    pyc.write("slowhello.py", SLOW_HELLO)
    master = pyc.start("slowhello:main", "-w", "3", "-b", f"127.0.0.1:{free_port}", "--graceful-timeout", "2")
    master.wait_ready()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(15)
        sock.connect(os.fspath(master.control))
        sock.sendall(b'{"cmd": "reload", "wait": true}\n')
        first = json.loads(sock.makefile("rb").readline())
        assert first["ok"] and first["result"]["progress"]["replaced"] == 1, first
    finally:
        sock.close()  # hang up after the first of 3 replacements
    st = master.wait_status(lambda st: all_listening(st, 3) and st["generation"] == 2
                            and all(w["generation"] == 2 for w in st["workers"])
                            and sorted(live_children(master.pid)) == sorted(w["pid"] for w in st["workers"]),
                            15, "every slot on generation 2, no other child")
    master.wait_line(r"reload complete: generation 2, 3 workers replaced", 5)
    pids = {w["pid"] for w in st["workers"]}
    assert serving(free_port, pids) == pids
