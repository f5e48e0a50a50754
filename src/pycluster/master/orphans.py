"""Reaping children that are not workers.

As PID 1 in a container, orphans are re-parented to the master; with
``--preload`` the master is a child subreaper, so the fork server's
intermediate processes and the workers of a fork server that died come back
to it too. The master's own workers are reaped through their pidfds; every
other zombie child is reaped here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pycluster as cluster


def reap_orphans(skip: Iterable[int] = ()) -> int:
    """Reap zombie children that are not cluster workers (nor in ``skip``); returns how many."""
    workers = {w.pid for w in cluster.workers.values()} | set(skip)
    reaped = 0
    for pid in _children():
        if pid in workers or not _is_zombie(pid):
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
        except ChildProcessError:
            pass
    return reaped


def _children() -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                pids.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False
