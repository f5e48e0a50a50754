"""The control socket and the control verbs (SPEC sections 3 and 5).

``status --json`` has SPEC's shape; ``status`` exits 3 with no master;
``list``; ``scale N|+N|-N`` and SIGTTIN / SIGTTOU change the worker count;
``logs --lines N`` shows workers' lines with their prefix; the socket is 0600
in a 0700 directory; garbage on the socket gets an error reply and leaves the
master answering; a stale socket left by a SIGKILLed master is replaced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

import pycluster
from cli_support import (  # noqa: F401
    IDLE_APP,
    PYCLUSTERCTL,
    Cluster,
    exchange,
    group_pids,
    http_get,
    pid_gone,  # (pyc is a fixture)
    pyc,
    untimed,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"
LIVE = ("online", "listening")


def live_workers(status: dict) -> list[dict]:
    return [w for w in status["workers"] if w["state"] in LIVE and w["pid"] and not pid_gone(w["pid"])]


def has_live(count: int):
    return lambda st: st["workers_wanted"] == count and len(live_workers(st)) == count \
        and len(st["workers"]) == count


def test_status_json_has_the_spec_shape(pyc, free_port):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}")
    assert master.wait_ready() == 2
    assert http_get(free_port)[0] == 200

    done = pyc.cli("status", "-n", "app", "--json")
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout, "--json output must never carry colour codes"
    status = json.loads(done.stdout)

    top = {"name": str, "pid": int, "version": str, "state": str, "policy": str, "generation": int,
           "workers_wanted": int, "uptime_s": (int, float), "target": str, "listeners": list, "workers": list}
    missing = set(top) - set(status)
    assert not missing, f"status lacks {missing}: {status}"
    for key, kind in top.items():
        assert isinstance(status[key], kind) and not isinstance(status[key], bool), (key, status[key])
    assert status["name"] == "app"
    assert status["pid"] == master.pid
    assert status["version"] == pycluster.__version__
    assert status["state"] == "running"
    assert status["policy"] == "rr"
    assert status["generation"] == 1
    assert status["workers_wanted"] == 2
    assert status["uptime_s"] >= 0
    assert status["target"] == HELLO
    assert status["listeners"] == [{"address": "127.0.0.1", "port": free_port, "address_type": 4}]

    assert len(status["workers"]) == 2
    worker_keys = {"id": int, "pid": int, "generation": int, "state": str, "uptime_s": (int, float),
                   "restarts": int, "connections": (int, type(None)), "cpu_percent": (int, float),
                   "rss_bytes": int, "last_exit": type(None)}
    for worker in status["workers"]:
        missing = set(worker_keys) - set(worker)
        assert not missing, f"worker entry lacks {missing}: {worker}"
        for key, kind in worker_keys.items():
            assert isinstance(worker[key], kind) and not isinstance(worker[key], bool), (key, worker)
        assert worker["generation"] == 1
        assert worker["state"] == "listening"
        assert worker["restarts"] == 0
        assert worker["rss_bytes"] > 1_000_000
        assert not pid_gone(worker["pid"])
    assert sorted(w["id"] for w in status["workers"]) == [1, 2]
    known = [w["connections"] for w in status["workers"] if w["connections"] is not None]
    if known:  # rr: the master handed exactly the one connection we made
        assert sum(known) == 1, status["workers"]

    table = pyc.cli("status", "-n", "app")
    assert table.returncode == 0, table.stderr
    for worker in status["workers"]:
        assert str(worker["pid"]) in table.stdout, table.stdout


def test_status_exits_3_when_no_master_answers(pyc):
    for args in (["status"], ["status", "--json"], ["status", "-n", "ghost"]):
        done = pyc.cli(*args)
        assert done.returncode == 3, (args, done.returncode, done.stdout, done.stderr)
        assert done.stderr.strip(), f"{args}: no message"
    # A socket file nobody listens on is not a master either.
    pyc.runtime_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(pyc.runtime_dir / "dead.sock"))
    done = pyc.cli("status", "-n", "dead")
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)


def test_list_and_verbs_without_a_name(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    one = pyc.start("idle_app:main", "-w", "1", name="alpha")
    one.wait_ready()
    only = pyc.cli("status", "--json")  # the only master: no -n needed
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["pid"] == one.pid

    two = pyc.start("idle_app:main", "-w", "1", name="beta")
    two.wait_ready()
    listing = pyc.cli("list")
    assert listing.returncode == 0, listing.stderr
    for master in (one, two):
        line = next((ln for ln in listing.stdout.splitlines() if master.name in ln), None)
        assert line is not None and str(master.pid) in line, listing.stdout
    rows = json.loads(pyc.cli("list", "--json").stdout)
    assert {(r["name"], r["pid"]) for r in rows} == {("alpha", one.pid), ("beta", two.pid)}

    ambiguous = pyc.cli("status")
    assert ambiguous.returncode != 0
    assert "alpha" in ambiguous.stderr and "beta" in ambiguous.stderr, ambiguous.stderr


def test_scale_verb_sets_and_adjusts_the_worker_count(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    first_pid = master.status()["workers"][0]["pid"]

    for arg, want in (("3", 3), ("+1", 4), ("-1", 3)):
        done = pyc.cli("scale", "-n", "app", arg)
        assert done.returncode == 0, (arg, done.stderr)
        status = master.wait_status(has_live(want), 10, f"{want} live workers after `scale {arg}`")
    assert first_pid in [w["pid"] for w in status["workers"]], "scaling should not replace the first worker"
    # A removed worker really went away: exactly 3 live worker processes in the master's group.
    wait_until(lambda: len(group_pids(master.pid)) == 1 + 3, 10, "1 master + 3 workers in the group",
               master.output)


def test_sigttin_and_sigttou_add_and_remove_a_worker(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    os.kill(master.pid, signal.SIGTTIN)
    master.wait_status(has_live(2), 10, "2 live workers after SIGTTIN")
    os.kill(master.pid, signal.SIGTTIN)
    master.wait_status(has_live(3), 10, "3 live workers after a second SIGTTIN")
    os.kill(master.pid, signal.SIGTTOU)
    master.wait_status(has_live(2), 10, "2 live workers after SIGTTOU")


def test_logs_shows_worker_lines_with_their_prefix(pyc):
    pyc.write("chatty_app.py", """
        import sys
        import threading

        def main():
            for i in range(10):
                print(f"chatty line {i}")
            print("chatty complaint", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            threading.Event().wait()
    """)
    master = pyc.start("chatty_app:main", "-w", "1")
    master.wait_ready()
    master.wait_line(r"^\[worker 1\] chatty line 9$")
    master.wait_line(r"^\[worker 1\] chatty complaint$")

    everything = pyc.cli("logs", "-n", "app", "--lines", "500")
    assert everything.returncode == 0, everything.stderr
    lines = [untimed(ln) for ln in everything.stdout.splitlines()]
    for i in range(10):
        assert f"[worker 1] chatty line {i}" in lines, everything.stdout
    assert "[worker 1] chatty complaint" in lines, everything.stdout
    assert [ln for ln in lines if "chatty line" in ln] == [f"[worker 1] chatty line {i}" for i in range(10)]

    last3 = pyc.cli("logs", "-n", "app", "--lines", "3")
    assert last3.returncode == 0, last3.stderr
    assert last3.stdout.splitlines() == everything.stdout.splitlines()[-3:], (last3.stdout, lines)


def test_control_socket_is_0600_in_a_0700_directory(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()
    sock_mode = os.stat(master.control).st_mode
    assert stat.S_ISSOCK(sock_mode)
    assert stat.S_IMODE(sock_mode) == 0o600, oct(stat.S_IMODE(sock_mode))
    dir_mode = stat.S_IMODE(os.stat(master.control.parent).st_mode)
    assert dir_mode == 0o700, oct(dir_mode)


# -- garbage on the socket: one master for every case --------------------------------------------

@pytest.fixture(scope="module")
def garbage_master(tmp_path_factory):
    import shutil
    import tempfile
    runtime_dir = Path(tempfile.mkdtemp(prefix="pyc-rt-", dir="/tmp")) / "run"
    cluster = Cluster(tmp_path_factory.mktemp("garbage"), runtime_dir)
    cluster.write("idle_app.py", IDLE_APP)
    try:
        master = cluster.start("idle_app:main", "-w", "1")
        master.wait_ready()
        yield master
    finally:
        cluster.cleanup()
        shutil.rmtree(runtime_dir.parent, ignore_errors=True)


TWO_MIB = b'{"cmd": "status", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}\n'

GARBAGE = {
    # name: (payload, half-close after sending, the connection must be closed after the reply)
    "bad-json": (b'{"cmd": status}\n', False, True),
    "not-an-object": (b'[1, 2, 3]\n', False, True),
    "not-utf8": (b'\xff\xfe{"cmd": "status"}\n', False, True),
    "unknown-cmd": (b'{"cmd": "dance"}\n', False, True),
    "cmd-not-a-string": (b'{"cmd": 5}\n', False, True),
    "scale-wrong-type": (b'{"cmd": "scale", "workers": "three"}\n', False, False),
    "scale-both-forms": (b'{"cmd": "scale", "workers": 2, "delta": 1}\n', False, False),
    "logs-wrong-type": (b'{"cmd": "logs", "lines": "all"}\n', False, False),
    "stop-wrong-type": (b'{"cmd": "stop", "now": "yes please"}\n', False, False),
    "two-mib-line": (TWO_MIB, False, True),
    "truncated-line": (b'{"cmd": "sta', True, True),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_gets_an_error_reply_and_the_master_still_answers(garbage_master, case):
    master = garbage_master
    payload, shut_write, must_close = GARBAGE[case]
    replies, closed = exchange(master.control, payload, shut_write=shut_write, check_closed=True, timeout=5)
    assert len(replies) == 1, f"{case}: expected one error reply, got {replies}"
    reply = replies[0]
    assert reply.get("ok") is False, reply
    error = reply.get("error")
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"], reply
    assert isinstance(error.get("message"), str) and error["message"], reply
    if must_close:
        assert closed, f"{case}: the master kept the connection open after {reply}"

    status = master.status()  # still answering, nothing changed
    assert status["pid"] == master.pid
    assert status["state"] == "running"
    assert status["workers_wanted"] == 1
    assert len(live_workers(status)) == 1
    assert master.proc.poll() is None


def test_stale_socket_of_a_sigkilled_master_is_replaced(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    first = pyc.start("idle_app:main", "-w", "1", name="stale")
    first.wait_ready()
    worker_pid = first.status()["workers"][0]["pid"]
    os.kill(first.pid, signal.SIGKILL)
    first.wait_exit(5)
    wait_until(lambda: pid_gone(worker_pid), 5, "the orphaned worker to exit")
    assert first.control.exists(), "expected the dead master's socket file to be left behind"
    gone = pyc.cli("status", "-n", "stale")
    assert gone.returncode == 3, (gone.stdout, gone.stderr)

    second = pyc.start("idle_app:main", "-w", "1", name="stale")
    second.wait_ready()
    assert second.status()["pid"] == second.pid
    done = pyc.cli("status", "-n", "stale", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pid"] == second.pid
    assert not re.search(r"in use", "\n".join(second.stderr)), second.output()


def test_pyclusterctl_runs_status_and_stop(pyc):
    ctl = [sys.executable, str(PYCLUSTERCTL)]
    pyc.write("idle_app.py", IDLE_APP)
    master = pyc.start("idle_app:main", "-w", "1")
    master.wait_ready()

    done = pyc.cli("status", "-n", "app", "--json", command=ctl)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["pid"] == master.pid and status["workers_wanted"] == 1

    # `stop` waits for the master to be gone, so reap the master (our child) while it waits.
    stopping = pyc.cli_start("stop", "-n", "app", command=ctl)
    assert master.wait_exit(15) == 0, master.output()
    done = pyc.finish(stopping, 10)
    assert done.returncode == 0, done.stderr
    assert not master.control.exists()

    gone = pyc.cli("status", "-n", "app", command=ctl)
    assert gone.returncode == 3, (gone.stdout, gone.stderr)
