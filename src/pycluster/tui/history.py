"""The last minute of samples behind the live view's rates and sparklines.

Pure bookkeeping: the caller hands in each status dict with the (monotonic)
time it was taken, so the tests can feed a known series.
"""

from __future__ import annotations

from collections import deque
from typing import Any

WINDOW_S = 60.0


class History:
    """Per worker id: (t, connections/s or None, cpu %) for every poll after the first that saw it."""

    def __init__(self, window: float = WINDOW_S):
        self.window = window
        self.master_pid: int | None = None
        self.samples: dict[int, deque[tuple[float, float | None, float]]] = {}
        self.totals: deque[tuple[float, float]] = deque()  # (t, conn/s summed over the workers)
        self._last: dict[int, tuple[float, int | None]] = {}  # worker id -> (t, connections) last poll

    def update(self, status: dict[str, Any], now: float) -> None:
        if status.get("pid") != self.master_pid:  # another master: its ids and counters start afresh
            self.samples.clear()
            self.totals.clear()
            self._last.clear()
            self.master_pid = status.get("pid")
        seen: set[int] = set()
        total: float | None = None
        for worker in status.get("workers", []):
            wid, conns = worker.get("id"), worker.get("connections")
            if wid is None:
                continue
            seen.add(wid)
            prev = self._last.get(wid)
            self._last[wid] = (now, conns)
            if prev is None or now <= prev[0]:
                continue
            rate = None
            if conns is not None and prev[1] is not None and conns >= prev[1]:
                rate = (conns - prev[1]) / (now - prev[0])
                total = (total or 0.0) + rate
            self.samples.setdefault(wid, deque()).append((now, rate, worker.get("cpu_percent") or 0.0))
        if total is not None:
            self.totals.append((now, total))
        for wid in set(self._last) - seen:  # replaced or retired workers
            self._last.pop(wid)
            self.samples.pop(wid, None)
        for samples in self.samples.values():
            _trim(samples, now - self.window)
        _trim(self.totals, now - self.window)

    def rates(self, wid: int) -> list[float | None]:
        return [s[1] for s in self.samples.get(wid, ())]

    def cpu(self, wid: int) -> list[float]:
        return [s[2] for s in self.samples.get(wid, ())]

    def rate(self, wid: int) -> float | None:
        """The latest connections/s of a worker (None before its second poll or when unknown)."""
        series = self.samples.get(wid)
        return series[-1][1] if series else None

    def total_rates(self) -> list[float]:
        return [t[1] for t in self.totals]

    def total_rate(self) -> float | None:
        return self.totals[-1][1] if self.totals else None


def _trim(series: deque[Any], oldest: float) -> None:
    while series and series[0][0] < oldest:
        series.popleft()
