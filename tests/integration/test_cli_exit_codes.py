"""Every exit code of ``pycluster run`` (SPEC section 3), with real processes and signals.

0 after a graceful stop (SIGTERM, SIGINT, ``pycluster stop``); 1 on a bind
failure (address named, no worker started) and on a control socket held by a
live master (its pid named); 2 on usage / config errors (the file, the key and
what is allowed named); 3 when the first generation never becomes ready (the
worker's stderr lines carried in the message).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import pytest

from cli_support import READY, group_pids, http_get, pid_gone, pyc  # noqa: F401  (pyc is a fixture)

pytestmark = pytest.mark.timeout(60)

HELLO = "pycluster.examples.hello:main"

# Writes a marker file at import: proves whether any worker was started.
MARKER_APP = """
    import os
    import threading

    open(os.environ["MARKER"], "a").close()

    def main():
        threading.Event().wait()
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stop"])
def test_graceful_stop_exits_0(pyc, free_port, how):
    pidfile = pyc.dir / "master.pid"
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{free_port}", "--pidfile", pidfile)
    assert master.wait_ready() == 2
    workers = [w["pid"] for w in master.status()["workers"]]
    assert http_get(free_port)[0] == 200
    assert master.control.exists()
    assert pidfile.read_text().strip() == str(master.pid)

    verb = None
    if how == "stop":
        # `stop` waits for the master to be gone, so reap the master (our child) while it waits.
        verb = pyc.cli_start("stop", "-n", "app")
    else:
        os.kill(master.pid, getattr(signal, how))
    assert master.wait_exit(15) == 0, master.output()
    if verb is not None:
        done = pyc.finish(verb, 10)
        assert done.returncode == 0, done.stderr
        assert str(master.pid) in done.stdout

    assert not master.control.exists(), "the control socket outlived a graceful stop"
    assert not pidfile.exists(), "the pidfile outlived a graceful stop"
    assert all(pid_gone(pid) for pid in workers), "workers outlived the master's graceful stop"
    assert group_pids(master.pid) == [], "processes left in the master's process group"
    assert master.find_line(r"stopping"), master.output()
    # Stop accepting: the port is free again.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", free_port)) != 0


def test_bind_in_use_exits_1_naming_the_address(pyc, free_port):
    marker = pyc.dir / "started"
    pyc.write("marker_app.py", MARKER_APP)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", free_port))
        holder.listen(1)
        master = pyc.run_to_end("marker_app:main", "-w", "2", "-b", f"127.0.0.1:{free_port}",
                                env={"MARKER": marker})
    assert master.proc.returncode == 1, master.output()
    err = "\n".join(master.stderr)
    assert f"127.0.0.1:{free_port}" in err, master.output()
    assert re.search(r"in use", err, re.I), master.output()
    assert not marker.exists(), "a worker was started although the bind failed"
    assert not master.find_line(r"\[worker \d+\]|worker \d+ .*ready"), master.output()


def test_control_socket_of_a_live_master_exits_1_naming_its_pid(pyc, free_port):
    pyc.write("idle_app.py", """
        import threading
        def main():
            threading.Event().wait()
    """)
    first = pyc.start("idle_app:main", "-w", "1", name="same")
    first.wait_ready()

    second = pyc.run_to_end("idle_app:main", "-w", "1", "-b", f"127.0.0.1:{free_port}", name="same")
    assert second.proc.returncode == 1, second.output()
    err = "\n".join(second.stderr)
    assert str(first.pid) in err, f"the message should name pid {first.pid}\n{second.output()}"
    assert not second.find_line(r"worker \d+ .*ready"), second.output()
    # The first master is unharmed and still owns its socket.
    assert first.status()["pid"] == first.pid
    assert first.proc.poll() is None


@pytest.mark.parametrize("case", [
    "unknown-key", "bad-value", "bad-bind", "workers-zero", "workers-word", "workers-negative",
    "bad-value-pyproject", "bad-env",
])
def test_usage_and_config_errors_exit_2(pyc, case):
    args = ["pycluster.examples.hello:main"]
    expect: list[str] = []
    env = None
    if case == "unknown-key":
        path = pyc.write("pycluster.toml", 'wokers = 2\n')
        expect = [str(path), "wokers", "did you mean", "workers"]
    elif case == "bad-value":
        path = pyc.write("pycluster.toml", 'policy = "fastest"\n')
        expect = [str(path), "policy", "fastest", "rr", "none", "reuseport"]
    elif case == "bad-value-pyproject":
        path = pyc.write("pyproject.toml", '[tool.pycluster]\ngraceful_timeout = "soon"\n')
        expect = [str(path), "graceful_timeout", "soon", "seconds"]
    elif case == "bad-env":
        env = {"PYCLUSTER_POLICY": "fastest"}
        expect = ["PYCLUSTER_POLICY", "fastest", "rr", "none", "reuseport"]
    elif case == "bad-bind":
        args += ["-b", "127.0.0.1:notaport"]
        expect = ["127.0.0.1:notaport"]
    elif case == "workers-zero":
        args += ["-w", "0"]
        expect = ["workers", "auto"]
    elif case == "workers-word":
        args += ["-w", "many"]
        expect = ["many", "workers", "auto"]
    elif case == "workers-negative":
        args += ["-w", "-3"]
        expect = ["-3"]
    master = pyc.run_to_end(*args, env=env)
    assert master.proc.returncode == 2, master.output()
    err = "\n".join(master.stderr)
    for needle in expect:
        assert needle in err, f"{needle!r} missing from the error message\n{master.output()}"
    assert "Traceback" not in err, master.output()
    assert not master.find_line(r"ready"), master.output()


@pytest.mark.parametrize("bind", [True, False], ids=["with-bind", "no-bind"])
def test_app_raising_at_import_exits_3_with_its_traceback(pyc, free_port, bind):
    pyc.write("broken_app.py", """
        def _load_settings():
            raise RuntimeError("boom at import: missing DATABASE_URL")

        _load_settings()

        def main():
            pass
    """)
    started = time.monotonic()
    # Without --bind a worker is ready once online; importing the app is still part of its boot.
    args = ["-b", f"127.0.0.1:{free_port}"] if bind else []
    master = pyc.run_to_end("broken_app:main", "-w", "2", *args, timeout=10)
    elapsed = time.monotonic() - started
    assert master.proc.returncode == 3, master.output()
    err = "\n".join(master.stderr)
    # The frames of the app and the exception itself (the tail may start below the "Traceback" header).
    assert 'broken_app.py", line 5, in <module>' in err, master.output()
    assert 'broken_app.py", line 3, in _load_settings' in err, master.output()
    assert "RuntimeError: boom at import: missing DATABASE_URL" in err, master.output()
    # It says so at once instead of looping until a timeout.
    assert elapsed < 10, f"took {elapsed:.1f}s\n{master.output()}"
    assert group_pids(master.pid) == [], "workers outlived the failed boot"


def test_app_that_never_listens_exits_3_after_boot_timeout(pyc, free_port):
    pyc.write("sleepy_app.py", """
        import sys
        import threading

        def main():
            print("sleepy: warming caches forever", file=sys.stderr, flush=True)
            threading.Event().wait()
    """)
    started = time.monotonic()
    master = pyc.run_to_end("sleepy_app:main", "-w", "1", "-b", f"127.0.0.1:{free_port}",
                            "--boot-timeout", "1", timeout=20)
    elapsed = time.monotonic() - started
    assert master.proc.returncode == 3, master.output()
    err = "\n".join(master.stderr)
    assert "sleepy: warming caches forever" in err, master.output()
    assert re.search(r"not ready|never became ready|timed? ?out", err), master.output()
    assert 0.9 < elapsed < 10, f"took {elapsed:.1f}s\n{master.output()}"
    assert not master.find_line(READY), master.output()
    assert group_pids(master.pid) == [], "the worker outlived the failed boot"


def test_a_missing_script_target_exits_2_before_any_worker(pyc, free_port):
    master = pyc.run_to_end("nosuch.py", "-b", f"127.0.0.1:{free_port}", timeout=10)
    assert master.proc.returncode == 2, master.output()
    err = "\n".join(master.stderr)
    assert "no such script: 'nosuch.py'" in err and "Traceback" not in err, master.output()


def test_daemon_failure_is_reported_once_and_preload_failure_leaves_no_socket(pyc, free_port):
    pyc.write("broken_app.py", "raise RuntimeError('boom at import')\n\ndef main():\n    pass\n")
    done = pyc.cli("run", "broken_app:main", "-d", "-n", "app", "-b", f"127.0.0.1:{free_port}", timeout=20)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("the first generation never became ready") == 1, done.stderr
    master = pyc.run_to_end("broken_app:main", "--preload", "-b", f"127.0.0.1:{free_port}", timeout=20)
    assert master.proc.returncode == 3, master.output()
    assert "RuntimeError: boom at import" in "\n".join(master.stderr), master.output()
    assert not (pyc.runtime_dir / "app.sock").exists(), "the control socket outlived the master"
