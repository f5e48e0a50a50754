"""The master's periodic checks: ``--timeout`` heartbeats and ``--max-memory``.

Each check is an object that owns its timer handle, reads the live config on
every tick (a reload may change a limit or switch it off) and does nothing
when switched off: the chain of ticks ends, and ``start()`` (idempotent, so a
reload never starts a second chain) switches it on again.
"""

from __future__ import annotations

import traceback
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

import pycluster as cluster

from .logs import LogBook
from .metrics import ClusterCounts
from .slots import Slot
from .workforce import heartbeat_contract, kill_late

if TYPE_CHECKING:
    import asyncio

    from ..primary.engine import PrimaryWorker

ABORT_GRACE = 1.0  # seconds between SIGABRT (faulthandler's stack) and SIGKILL
MEMORY_PERIOD = 1.0
MiB = 2 ** 20


class Host(Protocol):
    """What the checks need of the arbiter."""

    cfg: Any
    state: str
    logs: LogBook
    loop: asyncio.AbstractEventLoop | None
    counts: ClusterCounts

    @property
    def slots(self) -> dict[int, Slot]: ...
    def keep_task(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]: ...
    def adopt(self, slot: Slot, worker: PrimaryWorker, generation: int) -> None: ...
    def retire_worker(self, worker: PrimaryWorker) -> None: ...


class Periodic:
    NAME = "periodic"

    def __init__(self, arbiter: Host):
        self.arbiter = arbiter
        self.handle: asyncio.TimerHandle | None = None
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
        assert loop is not None, "checks tick on the master's loop"
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

    def __init__(self, arbiter: Host):
        super().__init__(arbiter)
        self.aborted: set[int] = set()  # ids of workers aborted already (waiting for their SIGKILL)

    def interval(self) -> float:
        return float(self.arbiter.cfg.timeout) / 4

    def check(self, interval: float) -> None:
        arbiter = self.arbiter
        loop = arbiter.loop
        assert loop is not None
        now = loop.time()
        late = now - self.due
        live: list[PrimaryWorker] = [w for w in cluster.workers.values() if not w.is_dead()]
        self.aborted &= {w.id for w in live}
        workers = [w for w in live if w.is_connected() and w.id not in self.aborted]
        if late > interval:
            for worker in workers:
                worker.last_heartbeat = now
            arbiter.logs.master(f"the heartbeat check ran {late:.1f}s late (the master was paused or starved):"
                                f" no worker is judged on that gap; heartbeat clocks restarted")
            return
        timeout = arbiter.cfg.timeout
        for worker in workers:
            contract = heartbeat_contract(worker, timeout)
            if not contract:
                continue  # started without heartbeats
            limit = max(timeout, contract)
            last = worker.last_heartbeat
            if last is None:
                worker.last_heartbeat = last = now  # starts counting at its first check
            if now - last > limit:
                self.aborted.add(worker.id)
                arbiter.logs.master(f"worker {worker.id} (pid {worker.pid}) sent no heartbeat for"
                                    f" {now - last:.1f}s (--timeout {limit:g}); aborting it")
                worker.signal("SIGABRT")
                loop.call_later(ABORT_GRACE, kill_late, worker)


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
            if worker is None or worker.pid is None or not slot.ready or slot.replacing:
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
            arbiter.keep_task(self.replace(slot), f"replacing worker {worker.id}")

    async def replace(self, slot: Slot) -> None:
        """Replace the slot's worker, the new one ready first."""
        from .reload import BootHost, boot_replacement
        arbiter = self.arbiter
        slot.replacing = True
        generation = slot.generation
        try:
            # The arbiter is both this check's Host and the reload's BootHost.
            new, failure = await boot_replacement(cast(BootHost, arbiter), generation)
            if failure is not None or new is None:
                arbiter.logs.master(f"replacement abandoned: {failure}" if arbiter.state == "stopping"
                                    else f"replacement failed: {failure}")
                return
            # While it booted the slot may have been scaled away, reloaded, or the cluster stopped:
            # a replacement nobody tracks would serve on, outside every reload and stop.
            why = ("the cluster is stopping" if arbiter.state == "stopping"
                   else f"slot {slot.index} was scaled away" if arbiter.slots.get(slot.index) is not slot
                   else f"slot {slot.index} was reloaded meanwhile" if slot.generation != generation
                   else None)
            if why is not None:
                arbiter.logs.master(f"worker {new.id} (pid {new.pid}) is no longer wanted ({why}); stopping it")
                arbiter.retire_worker(new)
                return
            old = slot.worker
            arbiter.adopt(slot, new, generation)
            slot.restarts += 1
            arbiter.counts.restarted("memory")
            slot.memory_fresh = new.id
            if old is not None:
                arbiter.retire_worker(old)
        finally:
            slot.replacing = False


def held(slot: Slot, limit: int | None) -> bool:
    """Is ``slot`` held by MemoryCheck (same worker, same limit)?"""
    hold = slot.memory_hold
    return hold is not None and slot.worker is not None and hold[:2] == (slot.worker.id, limit)


def memory_warning(slot: Slot, limit: int | None) -> str | None:
    """The status line of a held slot, else None."""
    if not held(slot, limit) or slot.memory_hold is None:
        return None
    _id, limit, rss = slot.memory_hold
    return (f"uses {rss // MiB} MiB at its start, over --max-memory {limit // MiB} MiB:"
            f" not replaced for memory (raise --max-memory)")
