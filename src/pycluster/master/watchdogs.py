"""The master's periodic checks: ``--timeout`` heartbeats and ``--max-memory``.

Each check is an object that owns its timer handle, reads the live config on
every tick (a reload may change a limit or switch it off) and does nothing
when switched off: the chain of ticks ends, and ``start()`` (idempotent, so a
reload never starts a second chain) switches it on again.
"""

from __future__ import annotations

import traceback
from typing import Any

import pycluster as cluster

ABORT_GRACE = 1.0  # seconds between SIGABRT (faulthandler's stack) and SIGKILL
MEMORY_PERIOD = 1.0
MiB = 2 ** 20


class Periodic:
    NAME = "periodic"

    def __init__(self, arbiter: Any):
        self.arbiter = arbiter
        self.handle: Any = None
        self.due = 0.0  # the loop time the pending tick is due at

    def interval(self) -> float:
        """Seconds between ticks under the live config; 0 when switched off."""
        raise NotImplementedError

    def check(self, interval: float) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self.handle is None:
            self._schedule()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _schedule(self) -> None:
        interval = self.interval()
        if not interval:
            return
        loop = self.arbiter.loop
        self.due = loop.time() + interval
        self.handle = loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        self.handle = None
        if self.arbiter.state == "stopping":
            return
        interval = self.interval()
        if not interval:
            return  # switched off by a reload
        try:
            self.check(interval)
        except Exception:  # noqa: BLE001 - a check that fails is logged and keeps its schedule
            self.arbiter.logs.master(f"the {self.NAME} check failed:\n{traceback.format_exc().rstrip()}")
        self._schedule()


class HeartbeatCheck(Periodic):
    """``--timeout S``: SIGABRT (its stack reaches the log), then SIGKILL, a
    worker that sent no heartbeat for S seconds.

    Silence is only counted while the master itself was running: a tick that
    comes more than a whole interval late means the master was paused
    (SIGSTOP, ``docker pause`` of the whole group) or starved, and during
    that gap it could neither read heartbeats nor could its workers (paused
    with it) send them. Such a tick restarts every worker's clock instead of
    judging anyone.

    Each worker is held to the heartbeat its environment asked of it at fork
    (``heartbeat_timeout``): a worker started without heartbeats (``--timeout``
    was 0 then) is never judged, and one started with a longer timeout is not
    judged on a shorter one set by a reload that is about to replace it."""

    NAME = "heartbeat"

    def interval(self) -> float:
        return self.arbiter.cfg.timeout / 4

    def check(self, interval: float) -> None:
        arbiter = self.arbiter
        now = arbiter.loop.time()
        late = now - self.due
        workers = [w for w in cluster.workers.values()
                   if not w.is_dead() and w.is_connected() and not getattr(w, "_aborted", False)]
        if late > interval:
            for worker in workers:
                worker.last_heartbeat = now
            arbiter.logs.master(f"the heartbeat check ran {late:.1f}s late (the master was paused or starved):"
                                f" no worker is judged on that gap; heartbeat clocks restarted")
            return
        timeout = arbiter.cfg.timeout
        for worker in workers:
            contract = getattr(worker, "heartbeat_timeout", timeout)
            if not contract:
                continue  # started without heartbeats
            limit = max(timeout, contract)
            last = worker.last_heartbeat
            if last is None:
                worker.last_heartbeat = last = now  # starts counting at its first check
            if now - last > limit:
                worker._aborted = True
                arbiter.logs.master(f"worker {worker.id} (pid {worker.pid}) sent no heartbeat for"
                                    f" {now - last:.1f}s (--timeout {limit:g}); aborting it")
                worker.signal("SIGABRT")
                arbiter.loop.call_later(ABORT_GRACE, arbiter._kill_late, worker)


class MemoryCheck(Periodic):
    """``--max-memory``: replace a worker over the limit gracefully (new one ready first).

    A worker that is over the limit at its first check after it replaced an
    over-limit worker shows that the limit is below what the app needs to
    run: replacing it again would only loop. Its slot is held (warned once,
    shown in ``status``) until its worker changes or the limit does."""

    NAME = "memory"

    def interval(self) -> float:
        return MEMORY_PERIOD if self.arbiter.cfg.max_memory else 0.0

    def check(self, interval: float) -> None:
        from ..core.stats import sample
        arbiter = self.arbiter
        limit = arbiter.cfg.max_memory
        for slot in list(arbiter.slots.values()):
            worker = slot.worker
            if worker is None or not slot.ready or slot.replacing:
                continue
            _cpu, rss = sample(worker.pid)
            if rss is None:
                continue
            if rss <= limit:
                slot.memory_fresh = None
                continue
            if held(slot, limit):
                continue
            if slot.memory_fresh == worker.id:
                slot.memory_fresh = None
                slot.memory_hold = (worker.id, limit, rss)
                arbiter.logs.master(f"worker {worker.id} (pid {worker.pid}) uses {rss // MiB} MiB at its start,"
                                    f" over --max-memory {limit // MiB} MiB: the limit is below what the app"
                                    f" needs; slot {slot.index} is not replaced for memory any more"
                                    f" (raise --max-memory)")
                continue
            arbiter.logs.master(f"worker {worker.id} (pid {worker.pid}) uses {rss // MiB} MiB, over"
                                f" --max-memory {limit // MiB} MiB; replacing it")
            slot.replacing = True  # until the replacement took over (or failed)
            arbiter.keep_task(arbiter._replace(slot), f"replacing worker {worker.id}")


def held(slot: Any, limit: int | None) -> bool:
    """Is ``slot`` held by MemoryCheck (same worker, same limit)?"""
    hold = slot.memory_hold
    return hold is not None and slot.worker is not None and hold[:2] == (slot.worker.id, limit)


def memory_warning(slot: Any, limit: int | None) -> str | None:
    """The status line of a held slot, else None."""
    if not held(slot, limit):
        return None
    _id, limit, rss = slot.memory_hold
    return (f"uses {rss // MiB} MiB at its start, over --max-memory {limit // MiB} MiB:"
            f" not replaced for memory (raise --max-memory)")
