"""A reload boots up to ``--reload-batch`` new workers at once (issue 14).

With 4 workers and a batch of 4, the whole new generation starts while every
old worker still serves, and none leaves before the new ones are ready; a new
worker that fails mid-batch aborts the reload: the other new ones, already
started, are killed at once (not after ``--boot-timeout``) and the old
generation keeps serving.

The app's new generation (imported once the file ``gen2`` exists) writes
``started/PID`` in each worker before it listens, then waits at a gate the test controls, so what is booting at
the same time is seen, not guessed from timings.
"""

from __future__ import annotations

import os
import time

import pytest

from cli_support import http_get, pid_gone, pyc, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

GATED_APP = """
    import os, time
    from pycluster.examples import hello
    HERE = {here!r}
    GEN2 = os.path.exists(os.path.join(HERE, "gen2"))  # at import: in the fork server under --preload

    def main():
        if GEN2:
            started = os.path.join(HERE, "started")
            os.makedirs(started, exist_ok=True)
            open(os.path.join(started, str(os.getpid())), "w").close()
            if os.path.exists(os.path.join(HERE, "fail_one")):
                while len(os.listdir(started)) < 4:  # the whole batch is booting ...
                    time.sleep(0.01)
                try:  # ... then exactly one of them fails
                    os.close(os.open(os.path.join(HERE, "failed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    raise RuntimeError("broken new code")
                except FileExistsError:
                    pass
            while not os.path.exists(os.path.join(HERE, "gate")):
                time.sleep(0.01)
        hello.main()
"""


def gated_master(pyc, port: int, *args: str):
    pyc.write("gated.py", GATED_APP.format(here=str(pyc.dir)))
    master = pyc.start("gated:main", "-w", "4", "-b", f"127.0.0.1:{port}", "--reload-batch", "4",
                       "--graceful-timeout", "5", *args, env={"PYTHONDONTWRITEBYTECODE": "1"})
    master.wait_ready(20)
    old = sorted(w["pid"] for w in master.status()["workers"])
    assert len(old) == 4
    (pyc.dir / "gen2").touch()
    return master, old


def nice_values(pid: int) -> set[int]:
    """The nice value of each of the process's threads (Linux keeps one per thread)."""
    values = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            values.add(os.getpriority(os.PRIO_PROCESS, int(tid)))
        except OSError:
            pass
    return values


def may_renice_back() -> bool:
    from pycluster.master.priority import restore_floor
    return restore_floor() <= 0


def started(pyc) -> list[int]:
    folder = pyc.dir / "started"
    return sorted(int(name) for name in os.listdir(folder)) if folder.exists() else []


@pytest.mark.parametrize("how", ["PYCLUSTER_RELOAD_NICE=0", "--policy reuseport"])
def test_the_old_generation_keeps_its_priority_with_reload_nice_0_or_under_reuseport(pyc, free_port, how):
    pyc.write("gated.py", GATED_APP.format(here=str(pyc.dir)))
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    args = ["--policy", "reuseport"] if how.startswith("--") else []
    if not args:
        env["PYCLUSTER_RELOAD_NICE"] = "0"
    master = pyc.start("gated:main", "-w", "2", "-b", f"127.0.0.1:{free_port}", "--reload-batch", "2", *args,
                       env=env)
    master.wait_ready(20)
    old = sorted(w["pid"] for w in master.status()["workers"])
    (pyc.dir / "gen2").touch()
    reload = pyc.cli_start("reload", "-n", "app", "--wait")
    wait_until(lambda: len(started(pyc)) == 2, 15, "2 new workers booting", master.output)
    assert master.status()["state"] == "reloading"
    assert all(nice_values(pid) == {0} for pid in old), {pid: nice_values(pid) for pid in old}
    (pyc.dir / "gate").touch()
    assert pyc.finish(reload, 20).returncode == 0, master.output()


@pytest.mark.parametrize("preload", [False, True], ids=["spawn", "preload"])
def test_a_batch_of_4_boots_the_new_generation_before_any_old_worker_leaves(pyc, free_port, preload):
    master, old = gated_master(pyc, free_port, *(["--preload"] if preload else []))
    reload = pyc.cli_start("reload", "-n", "app", "--wait")
    wait_until(lambda: len(started(pyc)) == 4, 15, "4 new workers booting at once",
               lambda: f"started {started(pyc)}\n{master.output()}")
    st = master.status()
    assert st["state"] == "reloading", st
    assert sorted(w["pid"] for w in st["workers"]) == old, (old, st)  # every old worker still in its slot
    assert not any(pid_gone(pid) for pid in old), old
    for _ in range(8):  # and serving
        code, headers, _body = http_get(free_port)
        assert code == 200 and int(headers["x-pid"]) in old, headers
    if may_renice_back():  # the old generation yields the CPU to the new one while it boots
        assert all(nice_values(pid) == {10} for pid in old), {pid: nice_values(pid) for pid in old}
        assert all(nice_values(pid) == {0} for pid in started(pyc)), {p: nice_values(p) for p in started(pyc)}

    (pyc.dir / "gate").touch()
    done = pyc.finish(reload, 20)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{master.output()}"
    st = master.status()
    assert st["generation"] == 2 and sorted(w["pid"] for w in st["workers"]) == started(pyc), st
    wait_until(lambda: all(pid_gone(pid) for pid in old), 10, "the old workers gone", master.output)


def test_a_failure_mid_batch_kills_the_started_new_workers_and_keeps_the_old(pyc, free_port):
    master, old = gated_master(pyc, free_port, "--boot-timeout", "30")
    (pyc.dir / "fail_one").touch()
    t0 = time.monotonic()
    done = pyc.cli("reload", "-n", "app", "--wait", timeout=25)
    took = time.monotonic() - t0
    assert done.returncode != 0, f"{done.stdout}\n{done.stderr}"
    assert "broken new code" in done.stderr, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert took < 15, f"the abort waited for --boot-timeout ({took:.1f} s)"
    new = started(pyc)
    assert len(new) == 4, new  # all four had started: the failure was mid-batch
    wait_until(lambda: all(pid_gone(pid) for pid in new), 10, "the started new workers killed",
               lambda: f"new {new}\n{master.output()}")

    st = master.wait_status(lambda st: st["state"] == "running", 5, "the master back to running")
    assert st["generation"] == 1, st
    assert sorted(w["pid"] for w in st["workers"]) == old, (old, st)
    assert all(nice_values(pid) == {0} for pid in old), {pid: nice_values(pid) for pid in old}  # priority back
    assert all(w["generation"] == 1 and w["state"] == "listening" for w in st["workers"]), st
    for _ in range(8):
        code, headers, _body = http_get(free_port)
        assert code == 200 and int(headers["x-pid"]) in old, headers
