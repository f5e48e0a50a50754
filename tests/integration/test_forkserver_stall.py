"""A ``--preload`` fork server that stalls (issue 12 item 3).

The master talks to the fork server asynchronously, with request ids: while
the fork server is stuck, the master's loop keeps answering control requests
and handing connections to the healthy workers; a fork request unanswered
within ``PYCLUSTER_FORK_TIMEOUT`` fails that one start, the stalled fork
server is killed and a new one started, and the cluster returns to N/N (a
later kill -9 of a worker is replaced as usual). Nothing is left behind: not
the stalled fork server, not a worker it forked for a start that was given up.

The app stalls its fork server on demand, deterministically: SIGUSR2 makes
the fork server (and only it) sleep in a signal handler (for good, or for as
long as a file says); a flag file makes it sleep right after it forked (the
worker exists, its pid never reaches the master). Both write a mark file
once they sleep.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from cli_support import group_pids, http_get, json_app, pid_gone, pyc, unused_port, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

FORK_TIMEOUT = 3.0  # PYCLUSTER_FORK_TIMEOUT for these masters: the stall lasts this long

STALL_APP = json_app(
    prelude="""
        import signal
        import time

        MARK = os.environ["STALL_MARK"]
        SERVER = os.getpid()  # --preload: the fork server imports the app

        def stall(*_args):
            if os.getpid() == SERVER:
                open(MARK, "w").close()
                seconds = MARK + ".seconds"  # a stall that ends by itself, if asked
                time.sleep(float(open(seconds).read()) if os.path.exists(seconds) else 3600)

        signal.signal(signal.SIGUSR2, stall)
        os.register_at_fork(after_in_parent=lambda: os.path.exists(MARK + ".after-fork") and stall())
    """,
    facts="""{"pid": os.getpid(), "worker": cluster.worker.id}""")


def start(pyc, port: int, workers: int = 2):
    pyc.write("stallapp.py", STALL_APP)
    mark = pyc.dir / "stalled"
    master = pyc.start("stallapp:main", "--preload", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                       "--graceful-timeout", "2",
                       env={"STALL_MARK": str(mark), "PYCLUSTER_FORK_TIMEOUT": str(FORK_TIMEOUT)})
    master.wait_ready()
    return master, mark


def listening(status: dict) -> set[int]:
    return {w["pid"] for w in status["workers"] if w["state"] == "listening"}


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return {int(x) for x in fh.read().split()}


def forkserver_pid(master) -> int:
    (server,) = wait_until(lambda: (children(master.pid) - {w["pid"] for w in master.status()["workers"]})
                           or None, 10, "the fork server")
    return server


def timed_status(master) -> tuple[float, dict]:
    started = time.monotonic()
    status = master.status()
    return time.monotonic() - started, status


def nothing_left_behind(master, workers: int) -> bool:
    """Only the master, its N listening workers and one fork server are alive."""
    status = master.status()
    alive = set(group_pids(master.pid)) - {master.pid}
    pids = listening(status)
    return len(pids) == workers and len(alive) == workers + 1 and pids <= alive


def test_a_stalled_fork_server_never_blocks_the_master_and_is_replaced(pyc):
    port = unused_port()
    master, mark = start(pyc, port)
    server = forkserver_pid(master)
    before = listening(master.status())
    victim, healthy = sorted(before)

    os.kill(server, signal.SIGUSR2)
    wait_until(mark.exists, 5, "the fork server stalled")
    os.kill(victim, signal.SIGKILL)  # its replacement is asked of the stalled fork server

    # (a) during the stall: control answers at once and the healthy worker serves.
    rounds = 0
    deadline = time.monotonic() + FORK_TIMEOUT + 5
    while not master.find_line(r"did not answer a fork request"):
        took, status = timed_status(master)
        assert took < 1.0, f"status took {took:.2f}s during the fork server's stall\n{master.output()}"
        code, _headers, body = http_get(port, timeout=2)
        assert code == 200 and json.loads(body)["pid"] == healthy
        rounds += 1
        assert time.monotonic() < deadline, f"the stall was never detected\n{master.output()}"
        time.sleep(0.05)  # pacing the probes, not synchronisation
    assert rounds >= 3, f"only {rounds} rounds during a {FORK_TIMEOUT}s stall"
    assert master.find_line(r"cannot start a worker: the fork server \(pid %d\) did not answer" % server)

    # (b) a new fork server; back to 2/2; a later kill -9 is replaced.
    master.wait_line(r"the fork server \(pid %d\) exited" % server)
    master.wait_line(r"fork server \(pid (?!%d\))\d+\) loaded" % server)
    status = master.wait_status(lambda s: len(listening(s)) == 2 and victim not in listening(s), 10,
                                "the killed worker replaced after the stall")
    second = min(listening(status) - {healthy})
    os.kill(second, signal.SIGKILL)
    master.wait_status(lambda s: len(listening(s)) == 2 and second not in listening(s), 10,
                       "a later kill -9 replaced")

    # (c) nothing left behind: the stalled fork server is gone, a single new one.
    assert wait_until(lambda: pid_gone(server), 5, "the stalled fork server killed")
    wait_until(lambda: nothing_left_behind(master, 2), 10, "only the workers and one fork server",
               master.output)
    master.proc.send_signal(signal.SIGTERM)
    assert master.wait_exit(15) == 0
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")


def test_a_worker_forked_for_a_start_given_up_is_not_left_behind(pyc):
    """The fork server forks the worker, then stalls before it says the pid:
    the start fails, the worker (whose channel the master closed) goes, and
    so does the stalled fork server; the slot comes back from a new one."""
    port = unused_port()
    master, mark = start(pyc, port)
    server = forkserver_pid(master)
    victim = min(listening(master.status()))
    (pyc.dir / "stalled.after-fork").touch()
    os.kill(victim, signal.SIGKILL)
    wait_until(mark.exists, 5, "the fork server stalled after forking")
    # The orphan: a child of the master that is neither a worker nor the fork server.
    orphans = wait_until(lambda: children(master.pid) - {server} - {w["pid"] for w in master.status()["workers"]},
                         5, "the worker forked during the stall", master.output)
    took, _status = timed_status(master)
    assert took < 1.0
    (pyc.dir / "stalled.after-fork").unlink()  # the next fork server forks normally
    master.wait_line(r"did not answer a fork request", timeout=FORK_TIMEOUT + 5)
    status = master.wait_status(lambda s: len(listening(s)) == 2 and victim not in listening(s), 10,
                                "the slot back from a new fork server")
    assert not orphans & listening(status)
    assert wait_until(lambda: all(pid_gone(p) for p in orphans | {server}), 5,
                      "the given-up worker and the stalled fork server gone")
    wait_until(lambda: nothing_left_behind(master, 2), 10, "only the workers and one fork server",
               master.output)


def test_a_late_reply_for_a_start_given_up_is_discarded_and_its_worker_killed(pyc):
    """The start is given up (the slot is scaled away) while the fork server
    is slow; its reply comes later: the worker it names is killed and reaped,
    never adopted, and the fork server (it did answer) keeps serving."""
    port = unused_port()
    master, mark = start(pyc, port)
    server = forkserver_pid(master)
    status = master.status()
    victim = status["workers"][1]["pid"]  # slot 2's: the one `scale 1` removes
    (pyc.dir / "stalled.seconds").write_text("1.5")  # under FORK_TIMEOUT: a slow fork server, not a stuck one
    os.kill(server, signal.SIGUSR2)
    wait_until(mark.exists, 5, "the fork server slowed down")
    os.kill(victim, signal.SIGKILL)
    master.wait_status(lambda s: s["workers"][1]["state"] == "starting" and s["workers"][1]["pid"] is None, 5,
                       "slot 2 waiting for the fork server")
    assert pyc.cli("scale", "-n", "app", "1").returncode == 0  # gives the start up
    late = master.wait_line(r"a late worker \(pid (\d+)\) for a start given up; killing it", timeout=10)
    pid = int(late.group(1))
    assert wait_until(lambda: pid_gone(pid), 5, "the late worker killed")
    assert wait_until(lambda: pid not in children(master.pid), 5, "the late worker reaped")
    status = master.wait_status(lambda s: len(s["workers"]) == 1 and len(listening(s)) == 1, 10, "1 worker")
    assert pid not in listening(status)
    assert not master.find_line(r"did not answer a fork request"), "a slow answer is not a stall"
    assert forkserver_pid(master) == server
    # the same fork server still forks: scale back up
    assert pyc.cli("scale", "-n", "app", "2").returncode == 0
    master.wait_status(lambda s: len(listening(s)) == 2, 10, "2 workers again")
    wait_until(lambda: nothing_left_behind(master, 2), 10, "only the workers and one fork server",
               master.output)
