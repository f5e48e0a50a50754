"""Keeping ``wanted`` slots filled: the process side of the restart policy.

Starts a slot's worker (spawned, or forked by the ``--preload`` fork server
without ever blocking the loop), restarts it when it exits (``slots``
decides when), takes a ready replacement into a slot, scales, and retires
workers gracefully (SIGKILL after ``graceful_timeout``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from .forkserver.client import ForkServerError
from .logs import LogBook
from .slots import RestartPolicy, Slot, free_index

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine

    from ..primary.engine import Engine, PrimaryWorker
    from .forkserver.keeper import ForkServerKeeper

STDERR_TAIL = 20  # lines of a worker's stderr kept for a boot failure's report
MAX_WORKERS = 4096


class Host(Protocol):
    """What the workforce needs of the arbiter."""

    cfg: Any
    state: str
    generation: int
    reload_generation: int | None
    logs: LogBook
    loop: asyncio.AbstractEventLoop | None
    engine: Engine
    forkservers: ForkServerKeeper
    stderr_tails: dict[int, deque[str]]

    def worker_env(self) -> dict[str, str]: ...
    def keep_task(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]: ...
    def boot_failed(self, worker: PrimaryWorker | None, why: str) -> None: ...
    def boot_timed_out(self, worker: PrimaryWorker) -> None: ...


class Workforce:
    def __init__(self, host: Host):
        self.host = host
        self.slots: dict[int, Slot] = {}
        self.by_worker: dict[int, Slot] = {}  # worker id -> its slot

    def slot(self, index: int) -> Slot:
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = Slot(index)
        return slot

    # -- starting -------------------------------------------------------------
    def spawn(self, slot: Slot) -> None:
        host = self.host
        if host.state == "stopping":
            return
        slot.retry = None
        env = host.worker_env()
        if host.cfg.preload and host.loop is not None:
            generation = host.reload_generation or host.generation  # the fork server asked now runs it
            slot.launching = host.keep_task(self._spawn_forked(slot, env, generation), "starting a worker")
            return
        try:
            worker = host.engine.fork(env)
        except OSError as exc:
            host.logs.master(f"cannot start a worker: {exc}")
            if isinstance(exc, PermissionError) and host.state == "starting":
                # The exec itself was refused: no retry can fix that (SPEC 4:
                # a boot failure halts instead of respawning forever).
                host.boot_failed(None, f"could not be started: {exc}")
                return
            self.restart(slot, crashed=True)
            return
        self.spawned(slot, worker)

    async def fork_worker(self, env: dict[str, str]) -> PrimaryWorker:
        """Start a worker: spawned, or (--preload) forked by the fork server
        without ever blocking the loop. Raises OSError if it cannot start."""
        host = self.host
        if not host.cfg.preload:
            return host.engine.fork(env)
        server = host.forkservers.current
        if server is None or not server.ready:
            raise ForkServerError("the fork server is not ready (a new one is starting)")
        return await host.engine.fork_async(env, server.launch)

    async def _spawn_forked(self, slot: Slot, env: dict[str, str], generation: int) -> None:
        host = self.host
        try:
            worker = await self.fork_worker(env)
        except Exception as exc:  # noqa: BLE001 - a failed start is the restart policy's to handle
            slot.launching = None
            if host.state != "stopping" and self.slots.get(slot.index) is slot:
                host.logs.master(f"cannot start a worker: {exc if isinstance(exc, OSError) else repr(exc)}")
                self.restart(slot, crashed=True)
            return
        slot.launching = None
        if host.state == "stopping":
            worker.signal("SIGKILL")
            return
        if self.slots.get(slot.index) is not slot or slot.worker is not None:
            self.retire_worker(worker)  # scaled away, or a reload's replacement took the slot meanwhile
            return
        self.spawned(slot, worker, generation)

    def spawned(self, slot: Slot, worker: PrimaryWorker, generation: int | None = None) -> None:
        host = self.host
        slot.worker = worker
        slot.ready = False
        slot.started = time.monotonic()
        slot.generation = generation or host.reload_generation or host.generation
        self.by_worker[worker.id] = slot
        hold_to_heartbeat(worker, host.cfg.timeout)  # what worker_env asked of it
        tail = host.stderr_tails[worker.id] = deque(maxlen=STDERR_TAIL)
        if host.loop is not None:
            host.logs.attach(worker, host.loop, tail)
            if host.state != "starting":
                slot.boot_timer = host.loop.call_later(host.cfg.boot_timeout, host.boot_timed_out, worker)

    def start_deferred(self) -> None:
        """The first worker is ready: start the rest of the first generation."""
        for slot in self.slots.values():
            if slot.deferred:
                slot.deferred = False
                if slot.idle():
                    self.spawn(slot)

    def restart(self, slot: Slot, *, crashed: bool) -> None:
        """Start ``slot`` again after its worker exited (or could not start), backing off if it crash-loops."""
        host = self.host
        delay = RestartPolicy.of(host.cfg).after_exit(slot, crashed=crashed)
        if delay is None:
            self.spawn(slot)  # no crash, or one fast crash: replaced at once; repeated ones back off
            return
        host.logs.master(f"slot {slot.index} is crash-looping: next start in {delay:.2f}s")
        if host.loop is None:
            return  # the first generation, before the loop exists: main() starts the slot again
        slot.retry = host.loop.call_later(delay, self.spawn, slot)

    def adopt(self, slot: Slot, worker: PrimaryWorker, generation: int) -> None:
        """A ready replacement (reload, --max-memory) takes over the slot."""
        old = slot.worker
        if old is not None:
            self.by_worker.pop(old.id, None)
        slot.worker = worker
        slot.ready = True
        slot.started = time.monotonic()
        slot.generation = generation
        slot.fails = 0
        self.by_worker[worker.id] = slot
        self.host.logs.master(f"worker {worker.id} (pid {worker.pid}) ready (generation {generation})")

    def release(self, worker: PrimaryWorker, code: int | None, sig: str | None) -> Slot | None:
        """``worker`` exited: free its slot (returned; None if it had none) and record the exit."""
        slot = self.by_worker.pop(worker.id, None)
        if slot is None:
            return None
        if slot.boot_timer is not None:
            slot.boot_timer.cancel()
            slot.boot_timer = None
        slot.last_exit = {"code": code, "signal": sig, "at": time.time()}
        if slot.worker is worker:
            slot.worker = None
        return slot

    # -- stopping -------------------------------------------------------------
    def scale(self, wanted: int) -> int:
        wanted = max(0, min(MAX_WORKERS, wanted))
        live = sorted(self.slots)
        while len(self.slots) < wanted:
            self.spawn(self.slot(free_index(self.slots)))
        for index in reversed(live):
            if len(self.slots) <= wanted:
                break
            self.retire(self.slots.pop(index))
        return wanted

    def cancel_pending(self, slot: Slot) -> None:
        """Cancel a back-off's start and a fork the fork server has not answered yet."""
        if slot.retry is not None:
            slot.retry.cancel()
            slot.retry = None
        if slot.launching is not None:
            slot.launching.cancel()  # the worker the fork server may still fork is killed (forkserver/client.py)
            slot.launching = None

    def retire(self, slot: Slot) -> None:
        """Gracefully stop a slot's worker (SIGKILL after graceful_timeout)."""
        self.cancel_pending(slot)
        if slot.worker is not None:
            self.retire_worker(slot.worker)

    def retire_worker(self, worker: PrimaryWorker) -> None:
        worker.disconnect()
        assert self.host.loop is not None
        self.host.loop.call_later(self.host.cfg.graceful_timeout, kill_late, worker)


def kill_late(worker: PrimaryWorker) -> None:
    """SIGKILL ``worker`` unless it is gone already (a graceful stop's deadline)."""
    if not worker.is_dead():
        worker.signal("SIGKILL")


# The heartbeat a worker's environment asked of it at its start (PYCLUSTER_HEARTBEAT):
# the heartbeat check judges each worker by its own contract (watchdogs.HeartbeatCheck).
def hold_to_heartbeat(worker: PrimaryWorker, timeout: float) -> None:
    """Record that ``worker`` was started with ``--timeout`` ``timeout`` (0: no heartbeats)."""
    worker.heartbeat_timeout = timeout


def heartbeat_contract(worker: PrimaryWorker, default: float) -> float:
    """The ``--timeout`` ``worker`` was started with; ``default`` if none was recorded."""
    return default if worker.heartbeat_timeout is None else worker.heartbeat_timeout
