"""master/priority.py: the old generation's threads yield the CPU during a reload, and get it back.

Real processes and real nice values (Linux keeps one per thread); the
integration side is in tests/integration/test_reload_batch.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pycluster.master.priority import Yielded, restore_floor

THREADS = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("up", flush=True)
time.sleep(60)
"""


class Child:
    """What Yielded needs of a worker: its threads' ids while it lives."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", THREADS], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "up\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def thread_ids(self, limit: int = 4096) -> list[int]:
        if self.proc.poll() is not None:
            return []
        return [int(t) for t in os.listdir(f"/proc/{self.proc.pid}/task")][:limit]

    def nice(self) -> set[int]:
        return {os.getpriority(os.PRIO_PROCESS, t) for t in self.thread_ids()}


@pytest.fixture
def child():
    c = Child()
    yield c
    c.proc.kill()
    c.proc.wait()


needs_restore = pytest.mark.skipif(restore_floor() > 0, reason="this process may not lower a nice value back")


@needs_restore
def test_every_thread_is_lowered_and_restored(child):
    assert len(child.thread_ids()) == 4 and child.nice() == {0}
    yielded = Yielded()
    yielded.lower(child, 10)
    assert child.nice() == {10} and len(yielded) == 1
    yielded.lower(child, 10)  # once per reload: not 20
    assert child.nice() == {10}
    yielded.restore(child)
    assert child.nice() == {0} and len(yielded) == 0


@needs_restore
def test_a_value_changed_since_is_left_alone(child):
    yielded = Yielded()
    yielded.lower(child, 5)
    tid = child.thread_ids()[1]
    os.setpriority(os.PRIO_PROCESS, tid, 7)  # someone else's choice after ours
    yielded.restore_all()
    assert sorted(os.getpriority(os.PRIO_PROCESS, t) for t in child.thread_ids()) == [0, 0, 0, 7]


def test_zero_and_a_gone_worker_change_nothing(child):
    yielded = Yielded()
    yielded.lower(child, 0)
    assert child.nice() == {0} and len(yielded) == 0
    child.proc.kill()
    child.proc.wait()
    yielded.lower(child, 10)  # reaped: no thread ids, nothing to do
    yielded.restore_all()
    assert len(yielded) == 0


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_without_cap_sys_nice_the_master_may_not_restore_so_it_does_not_lower():
    code = ("from pycluster.master.priority import restore_floor; print(restore_floor())")
    out = subprocess.run(["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", sys.executable, "-c",
                          code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    # RLIMIT_NICE is 0 here: without the capability no nice value can be lowered back.
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    assert int(out.stdout) == (20 - soft if soft != resource.RLIM_INFINITY else -20)
