"""During a reload the old generation yields the CPU to the new one booting.

On a busy machine, new workers that import the app compete for the CPU with
the old ones still serving (and, under --preload, the new fork server that
imports it once): a reload then takes as long as the old generation leaves
them. So when a reload starts, every thread of every old worker gets
``PYCLUSTER_RELOAD_NICE`` (default 10) added to its nice value; it still serves,
at a lower priority, which only matters while the CPU is contended. Each old
worker gets its nice values back when a ready replacement takes its slot (it
then drains), and every one still old does if the reload fails.

Lowering a priority is something a worker may do to itself; raising it back
needs CAP_SYS_NICE or RLIMIT_NICE. The master yields only when it may restore,
so a failed reload never leaves the serving generation slower than it was.
Nice values are per thread on Linux, so each thread is set by its id; an id
is read from /proc of a child we have not reaped, and a thread's value is
restored only while it is still the one we set.
"""

from __future__ import annotations

import os
import resource
from typing import Protocol

CAP_SYS_NICE = 23
# Threads of one worker we lower, at most: two system calls each on the master's
# loop, so a worker with a great many threads costs it ~1 ms, not more.
MAX_THREADS = 1024


class _Threads(Protocol):
    @property
    def pid(self) -> int | None: ...

    def thread_ids(self, limit: int = ...) -> list[int]: ...


def restore_floor() -> int:
    """The lowest nice value this process may set a thread back to: -20 with
    CAP_SYS_NICE, else 20 - RLIMIT_NICE (20: it may not lower any)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    if int(line.split()[1], 16) >> CAP_SYS_NICE & 1:
                        return -20
                    break
    except (OSError, ValueError):
        pass
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    except (OSError, ValueError):
        return 20
    if soft == resource.RLIM_INFINITY:
        return -20
    return max(-20, 20 - soft)


class Yielded:
    """The nice values we changed, per worker: ``{tid: (before, set)}``."""

    def __init__(self) -> None:
        self._changed: dict[int, tuple[_Threads, dict[int, tuple[int, int]]]] = {}

    def lower(self, worker: _Threads, by: int) -> None:
        if by <= 0 or id(worker) in self._changed:
            return
        changed: dict[int, tuple[int, int]] = {}
        floor = restore_floor()
        for tid in worker.thread_ids(MAX_THREADS):
            try:
                before = os.getpriority(os.PRIO_PROCESS, tid)
                if before < floor:
                    continue  # we could not give it back
                target = min(19, before + by)
                os.setpriority(os.PRIO_PROCESS, tid, target)
            except OSError:
                continue  # the thread ended, or it is not ours to change
            changed[tid] = (before, target)
        if changed:
            self._changed[id(worker)] = (worker, changed)

    def restore(self, worker: _Threads) -> None:
        entry = self._changed.pop(id(worker), None)
        if entry is None:
            return
        if not worker.thread_ids(1):
            return  # reaped: its threads are gone, their ids may be anyone's now
        for tid, (before, target) in entry[1].items():
            if not os.path.exists(f"/proc/{worker.pid}/task/{tid}"):
                continue  # that thread ended (its id may be another process's now)
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) == target:
                    os.setpriority(os.PRIO_PROCESS, tid, before)
            except OSError:
                pass

    def restore_all(self) -> None:
        for worker, _ in list(self._changed.values()):
            self.restore(worker)

    def __len__(self) -> int:
        return len(self._changed)
