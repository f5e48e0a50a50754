"""Process statistics: the one place that imports psutil (and reads /proc for connection counts)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def process_for(pid: int) -> Any:
    """A psutil.Process for ``pid`` (None if it is already gone)."""
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


_procs: dict[int, Any] = {}


def sample(pid: int) -> tuple[float | None, int | None]:
    """(cpu_percent since the last sample, rss bytes) of a live process."""
    import psutil

    proc = _procs.get(pid)
    try:
        if proc is None:
            proc = _procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)
        with proc.oneshot():
            return round(proc.cpu_percent(None), 1), proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        _procs.pop(pid, None)
        return None, None


def usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, user and system, since start; rss bytes) of a live process; None once gone."""
    import psutil

    try:
        proc = _procs.get(pid) or psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return times.user + times.system, proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def open_connections(pids: Iterable[int], ports: set[int]) -> dict[int, int]:
    """Established TCP connections of each live process in ``pids`` whose local port is one
    of ``ports`` (the cluster's listeners: what a worker is serving).

    The connection table is read once (``/proc/self/net/tcp`` and ``tcp6``: the workers
    share the master's network namespace) and each process's descriptors are matched
    against it by inode: a few ms for thousands of connections, where psutil's
    per-process scan took over 300 ms for 3,000 on the master's loop."""
    established: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{table}") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                        established.add(fields[9])
        except OSError:
            continue
    counts: dict[int, int] = {}
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue  # gone
        count = 0
        for fd in fds:
            try:
                link = os.readlink(f"{base}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in established:
                count += 1
        counts[pid] = count
    return counts


def forget(pid: int) -> None:
    """Drop ``pid``'s cached process (the master calls it when a worker is reaped)."""
    _procs.pop(pid, None)


def cached() -> int:
    """How many processes the sampler holds (tests: the cache does not grow with restarts)."""
    return len(_procs)
