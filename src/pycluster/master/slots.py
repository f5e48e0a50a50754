"""Slots and the restart policy: pure decisions, no processes.

A slot is a place for one worker; it survives its worker's restarts and
carries what the restart policy needs: how many fast crashes in a row
(``fails``), the pending back-off timer, the last exit.

The policy (SPEC 4): a worker that ran at least ``min_uptime`` seconds is
replaced at once and its slot's crash count starts over; the first fast
crash is replaced at once too; from the second fast crash in a row the slot
is *crash-looping* and each next start waits ``restart_delay``, doubling up
to ``max_restart_delay``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from ..primary.engine import PrimaryWorker


class Slot:
    """A place for one worker; survives its restarts."""

    __slots__ = ("index", "worker", "restarts", "fails", "started", "ready", "retry", "last_exit",
                 "generation", "boot_timer", "replacing", "deferred", "launching", "memory_fresh",
                 "memory_hold")

    def __init__(self, index: int):
        self.index = index
        self.worker: PrimaryWorker | None = None
        self.restarts = 0
        self.fails = 0  # fast crashes in a row
        self.started = 0.0  # time.monotonic() of the current worker's start
        self.ready = False
        self.retry: asyncio.TimerHandle | None = None  # a back-off's pending start
        self.last_exit: dict[str, Any] | None = None
        self.generation = 0
        self.boot_timer: asyncio.TimerHandle | None = None
        self.replacing = False
        self.deferred = False  # waits for the first worker of the first generation
        self.launching: asyncio.Task[None] | None = None  # --preload: waits for the fork server's reply
        self.memory_fresh: int | None = None  # a --max-memory replacement not yet seen under the limit
        self.memory_hold: tuple[int, int, int] | None = None  # (worker id, limit, rss): not replaced (watchdogs)

    def idle(self) -> bool:
        """No worker, none starting and no start pending: the slot may be started now."""
        return self.worker is None and self.retry is None and self.launching is None


class RestartSettings(Protocol):
    """The live config keys the restart policy reads (a reload may change them)."""

    @property
    def restart_delay(self) -> float: ...
    @property
    def max_restart_delay(self) -> float: ...
    @property
    def min_uptime(self) -> float: ...


@dataclass(frozen=True)
class RestartPolicy:
    restart_delay: float
    max_restart_delay: float
    min_uptime: float

    @classmethod
    def of(cls, cfg: RestartSettings) -> RestartPolicy:
        return cls(float(cfg.restart_delay), float(cfg.max_restart_delay), float(cfg.min_uptime))

    def crashed(self, uptime: float) -> bool:
        """An exit after less than ``min_uptime`` seconds counts as a crash."""
        return uptime < self.min_uptime

    def delay(self, fails: int) -> float | None:
        """Seconds to wait before the next start after ``fails`` crashes in a
        row; None: start at once (no crash, or the first one)."""
        if fails <= 1:
            return None
        doublings = min(fails - 2, 64)  # capped: a slot that crash-loops for days must not overflow a float
        return min(self.restart_delay * 2.0 ** doublings, self.max_restart_delay)

    def after_exit(self, slot: Slot, *, crashed: bool) -> float | None:
        """Count an exit of ``slot``'s worker; return the back-off before its
        next start (None: at once)."""
        slot.restarts += 1
        if not crashed:
            slot.fails = 0
            return None
        slot.fails += 1
        return self.delay(slot.fails)


def slot_state(slot: Slot) -> str:
    """The state ``status`` shows for a slot."""
    worker = slot.worker
    if worker is None:
        if slot.deferred or slot.launching is not None:
            return "starting"
        return "crash-looping" if slot.fails > 1 or slot.retry is not None else "dead"
    if worker.state == "disconnected":
        return "disconnecting"
    if worker.state == "dead":
        return "dead"
    if slot.fails > 1 and not slot.ready:
        return "crash-looping"
    if worker.state == "none":
        return "starting"
    return str(worker.state)


def first_wave(wanted: int, *, preload: bool, cpus: int | None = None) -> int:
    """How many workers of the first generation start at once.

    Booting interpreters is CPU-bound: when there are more workers than
    spare cores, only as many as there are spare cores (at least one) start
    at once and the rest follow as soon as the first is ready. The cluster
    then serves after one worker's boot time instead of after all of them
    shared the cores, and an app that fails at import fails in one worker,
    not in every one. Forking from a fork server is cheap: all at once."""
    if preload:
        return wanted
    return max(1, (cpus if cpus is not None else _cpus()) - 1)


def free_index(slots: dict[int, Slot]) -> int:
    """The lowest slot number not in use (a scale up fills the gaps first)."""
    index = 1
    while index in slots:
        index += 1
    return index


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
