"""Process statistics: the one place that imports psutil."""

from __future__ import annotations

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


def open_connections(pid: int, ports: set[int]) -> int | None:
    """Established TCP connections of a live process whose local port is one of ``ports``
    (the cluster's listeners: what the worker is serving); None once gone."""
    import psutil

    try:
        proc = _procs.get(pid) or psutil.Process(pid)
        found = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return sum(1 for c in found if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in ports)


def forget(pid: int) -> None:
    """Drop ``pid``'s cached process (the master calls it when a worker is reaped)."""
    _procs.pop(pid, None)


def cached() -> int:
    """How many processes the sampler holds (tests: the cache does not grow with restarts)."""
    return len(_procs)
