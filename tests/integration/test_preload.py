"""``pycluster run --preload`` (SPEC section 4, issue 6): a fork server imports
the app once and forks the workers.

The app is imported once per generation (not once per worker) and its objects
are frozen out of the collector; workers are the master's children (re-parented
through a double fork), reaped and replaced like spawned ones; a reload starts a
new fork server with the new code, a reload with broken code keeps the old one
(and later replacements use the old code); a fork server that dies is started
again; an app that fails to import ends the master with exit 3 and its
traceback; a script target is refused; SIGKILL of the master takes the fork
server and every worker with it; a graceful stop leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from cli_support import CLI, group_pids, http_get, json_app, pid_gone, pyc, unused_port, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

def app_source(version: str) -> str:
    return json_app(
        prelude=f"""
            VERSION = "{version}"
            with open(os.environ["IMPORT_LOG"], "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
        """,
        facts="""{"pid": os.getpid(), "ppid": os.getppid(), "version": VERSION,
                "frozen": gc.get_freeze_count(), "worker": cluster.worker.id,
                "env_id": os.environ.get("PYCLUSTER_WORKER_ID"),
                "app_env": os.environ.get("APP_SETTING")}""")


free_port = unused_port


def write_app(pyc, version: str) -> None:
    pyc.write("preapp.py", app_source(version))


def get_json(port: int) -> dict:
    status, _headers, body = http_get(port)
    assert status == 200
    return json.loads(body)


def start(pyc, port: int, workers: int = 3, *extra: str):
    log = pyc.dir / "imports.log"
    master = pyc.start("preapp:main", "--preload", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                       "--graceful-timeout", "2", *extra, env={"IMPORT_LOG": str(log), "APP_SETTING": "yes"})
    master.wait_ready()
    return master, log


def imports(log) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def worker_pids(status: dict) -> set[int]:
    return {w["pid"] for w in status["workers"] if w["state"] == "listening"}


def forkserver_pids(master) -> set[int]:
    """The master's children that are not workers (the fork server)."""
    workers = {w["pid"] for w in master.status()["workers"]}
    with open(f"/proc/{master.pid}/task/{master.pid}/children") as fh:
        children = {int(x) for x in fh.read().split()}
    return children - workers


def test_preload_imports_once_forks_children_of_the_master_and_replaces_them_fast(pyc):
    write_app(pyc, "v1")
    port = free_port()
    master, log = start(pyc, port)
    assert len(imports(log)) == 1, "the app must be imported once, by the fork server"
    (server,) = forkserver_pids(master)
    assert imports(log) == [server]
    assert master.find_line(r"fork server \(pid \d+\) loaded preapp:main")

    seen = {}
    wait_until(lambda: seen.update({r["pid"]: r for r in [get_json(port)]}) or len(seen) == 3, 10,
               "answers from all 3 workers")
    for pid, r in seen.items():
        assert r["ppid"] == master.pid, "a preloaded worker is re-parented to the master"
        assert r["version"] == "v1" and r["frozen"] > 0, "gc.freeze() ran in the fork server"
        assert r["env_id"] is None, "pycluster's variables are removed, as in a spawned worker"
        assert r["app_env"] == "yes"
    assert sorted(r["worker"] for r in seen.values()) == [1, 2, 3]

    # kill -9 of a worker: a new one, forked, not re-imported
    victim = min(seen)
    os.kill(victim, signal.SIGKILL)
    status = master.wait_status(lambda s: len(worker_pids(s)) == 3 and victim not in worker_pids(s), 10,
                                "the killed worker replaced")
    assert sum(w["restarts"] for w in status["workers"]) == 1
    assert len(imports(log)) == 1
    assert wait_until(lambda: pid_gone(victim), 5, "the victim reaped")

    master.proc.send_signal(signal.SIGTERM)
    assert master.wait_exit(15) == 0
    assert wait_until(lambda: not group_pids(master.pid), 5, "no process of the cluster left")


def test_reload_uses_a_new_fork_server_and_broken_code_keeps_the_old_one(pyc):
    write_app(pyc, "v1")
    port = free_port()
    master, log = start(pyc, port, 2)
    (old_server,) = forkserver_pids(master)

    write_app(pyc, "v2")
    done = pyc.cli("reload", "-n", "app", timeout=30)
    assert done.returncode == 0, done.stderr
    assert len(imports(log)) == 2, "one import per generation"
    assert {get_json(port)["version"] for _ in range(4)} == {"v2"}
    assert wait_until(lambda: pid_gone(old_server), 10, "the old fork server retired")
    (v2_server,) = wait_until(lambda: forkserver_pids(master) if len(forkserver_pids(master)) == 1 else None,
                              10, "one fork server")
    before = worker_pids(master.status())

    pyc.write("preapp.py", "raise RuntimeError('v3 is broken')\n")
    failed = pyc.cli("reload", "-n", "app", timeout=30)
    assert failed.returncode != 0
    assert "v3 is broken" in failed.stderr
    status = master.status()
    assert worker_pids(status) == before and status["generation"] == 2
    # the broken fork server exits by itself (after its error): wait, bounded, until it is gone
    wait_until(lambda: forkserver_pids(master) == {v2_server}, 10, "only the v2 fork server left")

    # a replacement after the failed reload still runs the code that serves (v2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    master.wait_status(lambda s: len(worker_pids(s)) == 2 and victim not in worker_pids(s), 10, "replaced")
    assert {get_json(port)["version"] for _ in range(4)} == {"v2"}


def test_a_dead_fork_server_is_started_again(pyc):
    write_app(pyc, "v1")
    port = free_port()
    master, log = start(pyc, port, 2)
    (server,) = forkserver_pids(master)
    os.kill(server, signal.SIGKILL)
    master.wait_line(r"the fork server \(pid %d\) exited" % server)
    new = wait_until(lambda: forkserver_pids(master) - {server}, 10, "a new fork server")
    master.wait_line(r"fork server \(pid %d\) loaded" % min(new))
    pids = worker_pids(master.status())
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    master.wait_status(lambda s: len(worker_pids(s)) == 2 and victim not in worker_pids(s), 10,
                       "replaced by the new fork server")
    assert get_json(port)["version"] == "v1"


def test_an_app_that_fails_to_import_exits_3_with_its_traceback(pyc):
    pyc.write("broken.py", "import os\n\ndef main():\n    pass\n\nraise ValueError('no database configured')\n")
    master = pyc.run_to_end("broken:main", "--preload", "-w", "2", "-b", f"127.0.0.1:{free_port()}", timeout=20)
    assert master.proc.returncode == 3, master.output()
    err = "\n".join(master.stderr)
    assert "could not load the app" in err and "ValueError: no database configured" in err, master.output()
    assert not group_pids(master.pid)


def test_a_script_target_is_refused(pyc):
    pyc.write("script.py", "print('hi')\n")
    master = pyc.run_to_end("script.py", "--preload", "-b", f"127.0.0.1:{free_port()}")
    assert master.proc.returncode == 2, master.output()
    assert "--preload needs a module:callable target" in "\n".join(master.stderr)


def test_sigkill_of_the_master_takes_the_fork_server_and_workers(pyc):
    write_app(pyc, "v1")
    master, _log = start(pyc, free_port(), 2)
    everyone = set(group_pids(master.pid)) - {master.pid}
    assert len(everyone) == 3  # the fork server and two workers
    os.kill(master.pid, signal.SIGKILL)
    master.proc.wait(5)
    wait_until(lambda: all(pid_gone(p) for p in everyone), 2, "the fork server and workers gone")


def test_scale_and_heartbeat_work_as_in_spawn_mode(pyc):
    """scale +N / -N fork from the fork server; a SIGSTOPped worker is caught by
    the --timeout heartbeat and replaced by a fork, as a spawned one would be."""
    write_app(pyc, "v1")
    port = free_port()
    master, log = start(pyc, port, 2, "--timeout", "2")
    assert pyc.cli("scale", "-n", "app", "+2").returncode == 0
    status = master.wait_status(lambda s: len(worker_pids(s)) == 4, 10, "4 workers")
    assert all(w["generation"] == 1 for w in status["workers"])
    assert len(imports(log)) == 1, "scaling up forks; it does not import the app again"
    assert pyc.cli("scale", "-n", "app", "-3").returncode == 0
    status = master.wait_status(lambda s: len(worker_pids(s)) == 1 and len(s["workers"]) == 1, 10, "1 worker")
    (victim,) = worker_pids(status)
    os.kill(victim, signal.SIGSTOP)
    master.wait_line(r"worker \d+ \(pid %d\) sent no heartbeat" % victim, timeout=15)
    master.wait_status(lambda s: len(worker_pids(s)) == 1 and victim not in worker_pids(s), 15, "replaced")
    assert get_json(port)["version"] == "v1"
    assert len(imports(log)) == 1
