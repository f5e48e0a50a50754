"""Rolling reload (nginx semantics): boot the new code first, keep the old
generation serving if anything fails.

Up to ``reload_batch`` replacements (freshly imported code) boot at once
(Kubernetes' maxSurge: workers above the wanted count); each one that is
ready (``boot_timeout``) takes over a slot of the old generation at once,
whose worker leaves rotation and stops gracefully, and the next replacement
starts. So no old worker leaves before a new one is ready to take its
place: capacity never drops. A replacement that dies or times out aborts
the reload: it and the replacements still booting are killed, the old
workers keep serving, and the caller gets the failed one's stderr tail. One
reload at a time.

The reload is a task the master owns, not part of the control request that
asked for it: a ``reload --wait`` client that hangs up (or is cut off) stops
getting progress lines, and the reload runs on to its end. It knows nothing
of the wire: it reports progress through a callback and ends with a
:class:`ReloadResult`; ``control/commands/reload.py`` renders both.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import pycluster as cluster

from ..control.protocol import RequestError
from ..core import tuning
from ..core.common import plural
from ..errors import SettingsError
from ..primary.engine import PrimaryWorker
from ..primary.spawn import credentials
from . import config
from .config import RunConfig, resolve_workers
from .logs import LogBook
from .metrics import ClusterCounts
from .priority import Yielded

STDERR_TAIL = 20
INTERRUPTED = "the reload was interrupted (the cluster is stopping)"


def batch_size(cfg: RunConfig) -> float:
    """How many replacements boot at once. ``auto``: all of them under --preload
    (a fork of the loaded fork server costs a few ms of CPU, so the new generation
    is ready about as soon as one worker would be); else the CPUs this process may
    run on (each spawned worker imports the app, a CPU's worth of work for a
    while: more at once only queue behind each other and slow the old workers
    still serving)."""
    if cfg.reload_batch == "auto":
        return math.inf if cfg.preload else resolve_workers("auto")
    return int(cfg.reload_batch)


@dataclass(frozen=True)
class Progress:
    """One more slot runs the new generation."""

    replaced: int
    total: int
    worker: int
    pid: int | None


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    generation: int
    replaced: int
    total: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # in field order: the control reply's key order


# -- what the reload needs of the master (the Arbiter) ---------------------------------
class _Check(Protocol):
    def start(self) -> None: ...


class _Slot(Protocol):
    retry: asyncio.TimerHandle | None

    @property
    def index(self) -> int: ...
    @property
    def worker(self) -> PrimaryWorker | None: ...
    @property
    def generation(self) -> int: ...


class BootHost(Protocol):
    """What booting one replacement (and waiting until it is ready) needs."""

    @property
    def state(self) -> str: ...
    @property
    def cfg(self) -> RunConfig: ...
    @property
    def logs(self) -> LogBook: ...
    @property
    def stderr_tails(self) -> MutableMapping[int, deque[str]]: ...
    @property
    def booting(self) -> MutableMapping[int, asyncio.Future[bool]]: ...
    async def fork_worker(self, env: dict[str, str]) -> PrimaryWorker: ...
    def worker_env(self) -> dict[str, str]: ...


class ReloadHost(BootHost, Protocol):
    """The master's public face that a rolling reload uses."""

    state: str
    cfg: RunConfig
    generation: int
    reload_generation: int | None
    scale_after_reload: Any
    config_workers: Any
    forkserver: Any
    counts: ClusterCounts

    @property
    def cfg_flags(self) -> Mapping[str, Any]: ...
    @property
    def cfg_path(self) -> str | None: ...
    @property
    def notify(self) -> Any: ...
    @property
    def wanted(self) -> int: ...
    @property
    def heartbeats(self) -> _Check: ...
    @property
    def memory(self) -> _Check: ...
    @property
    def slots(self) -> Mapping[int, _Slot]: ...
    def keep_task(self, coro: Coroutine[Any, Any, ReloadResult], what: str) -> asyncio.Task[ReloadResult]: ...
    def adopt(self, slot: Any, worker: PrimaryWorker, generation: int) -> None: ...
    def retire_worker(self, worker: PrimaryWorker) -> None: ...
    def scale(self, wanted: int) -> int: ...
    def start_forkserver(self) -> Any: ...
    def restart_forkserver(self) -> None: ...
    async def forkserver_ready(self, server: Any) -> bool: ...
    def retire_forkserver(self, server: Any) -> None: ...


# -- the config ------------------------------------------------------------------------
def reread_config(host: ReloadHost) -> tuple[str, ...]:
    """Re-read the config file before any worker is touched; a bad one aborts
    the reload (RequestError ``bad_config``) and changes nothing. Each key is
    applied as the table says (``Setting.on_reload``): live keys at once,
    next-generation keys to the workers started from now on (a changed
    ``workers`` scales the cluster once the reload is complete), restart-only
    keys kept and reported. Returns those notes."""
    try:
        fresh = config.load(host.cfg_flags, config_path=host.cfg_path)
        if config.uid_gid(fresh) != config.uid_gid(host.cfg):
            credentials(*config.uid_gid(fresh))  # an unknown user fails here, not at fork
    except (config.ConfigError, SettingsError) as exc:
        raise RequestError("bad_config", f"reload aborted, config unchanged: {exc}") from None
    plan = config.plan_reload(host.cfg, fresh)
    old, host.cfg = host.cfg, plan.config
    if (config.uid_gid(old), old.chdir) != (config.uid_gid(fresh), fresh.chdir):
        uid, gid = config.uid_gid(fresh)
        cluster.setup_primary(uid=uid, gid=gid, cwd=fresh.chdir or None)
    host.heartbeats.start()  # live timeouts and limits: no-ops when already ticking or switched off
    host.memory.start()
    if fresh.workers != host.config_workers:
        host.scale_after_reload = fresh.workers
    for note in plan.notes:
        host.logs.master(f"reload: {note}")
    return plan.notes


# -- the reload --------------------------------------------------------------------------
class RollingReload:
    """One rolling reload: :meth:`start` re-reads the config and starts the
    replacement task, which the master owns; :meth:`result` waits for its end.
    ``on_progress`` is called once per replaced slot; it must not block."""

    def __init__(self, host: ReloadHost, on_progress: Callable[[Progress], None] | None = None) -> None:
        self.host = host
        self.on_progress = on_progress
        self.generation = host.generation + 1
        self.notes: tuple[str, ...] = ()
        self._task: asyncio.Task[ReloadResult] | None = None
        self._started = 0.0
        self._replaced = 0
        self._total = 0
        self._yielded = Yielded()  # the old workers' threads we lowered (see master/priority.py)

    def start(self) -> None:
        """RequestError (``busy``, ``not_running``, ``bad_config``) when the reload cannot start."""
        host = self.host
        if host.state == "reloading":
            raise RequestError("busy", "a reload is already running; wait for it to finish")
        if host.state != "running":
            raise RequestError("not_running", f"cannot reload while the cluster is {host.state}")
        self.notes = reread_config(host)
        host.state = "reloading"
        self.generation = host.generation + 1
        if host.notify is not None:
            host.notify.reloading(host)
        self._task = host.keep_task(self._roll(), f"the reload to generation {self.generation}")

    async def result(self) -> ReloadResult:
        """The outcome; cancelling the caller leaves the reload running."""
        if self._task is None:
            raise RuntimeError("the reload was not started")
        return await asyncio.shield(self._task)

    def _progress(self, worker: PrimaryWorker) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(Progress(self._replaced, self._total, worker.id, worker.pid))
        except Exception as exc:  # noqa: BLE001 - a reporter's failure must not stop the reload
            self.on_progress = None
            self.host.logs.master(f"reload: progress reporting failed: {exc!r}")

    def _result(self, ok: bool, message: str) -> ReloadResult:
        self.host.counts.reloaded(ok)
        return ReloadResult(ok, message, self.generation, self._replaced, self._total,
                            round(time.monotonic() - self._started, 3))

    def _aborted(self, failure: str) -> str:
        self.host.logs.master(f"reload aborted: {failure}; generation {self.host.generation} keeps serving")
        return failure

    async def _roll(self) -> ReloadResult:
        host, generation = self.host, self.generation
        self._started = time.monotonic()
        self._total = len(host.slots)
        old_server = new_server = None
        ok = False
        try:
            # The old generation yields the CPU to the new one booting; not under
            # reuseport, where each old worker must empty its own accept queue
            # before it closes it (what is left there is reset, tcp_migrate_req=0).
            nice = 0 if host.cfg.policy == "reuseport" else tuning.reload_nice()
            for slot in host.slots.values():
                if slot.worker is not None and slot.generation < generation:
                    self._yielded.lower(slot.worker, nice)
            if host.cfg.preload:
                # --preload: the new code is imported once, by a new fork server.
                new_server = host.start_forkserver()
                if not await host.forkserver_ready(new_server):
                    return self._result(False, self._aborted(f"the new code failed to load: {new_server.error}"))
                old_server, host.forkserver = host.forkserver, new_server
            host.reload_generation = generation  # workers started from now on run the new code
            failure = await self._replace_all()
            if failure is not None:
                return self._result(False, failure)
            host.generation = generation
            ok = True
            self._scale()
            host.logs.master(f"reload complete: generation {generation}, {plural(self._replaced, 'worker')} replaced"
                             f" in {time.monotonic() - self._started:.2f}s")
            return self._result(True, "reloaded")
        finally:
            self._yielded.restore_all()  # a failed reload: the old generation serves on as before
            host.scale_after_reload = None
            host.reload_generation = None
            if old_server is not None:
                self._settle_forkservers(old_server, new_server, ok)
            if host.state == "reloading":
                host.state = "running"
            if host.notify is not None:
                host.notify.ready(host)

    async def _replace_all(self) -> str | None:
        """Replace every slot of an older generation, up to ``reload_batch`` replacements
        booting at once; the failure, if any. The set of slots is looked at afresh as
        each replacement is ready: a scale during the reload adds slots that start on
        the new code (and need no replacement) or removes slots (not replaced any more)."""
        host = self.host
        batch = batch_size(host.cfg)
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # set: stop the booting ones
        booting: set[asyncio.Task[tuple[PrimaryWorker | None, str | None]]] = set()
        try:
            while True:
                if host.state != "reloading":
                    return INTERRUPTED
                pending = len(self._pending())
                self._total = self._replaced + pending
                while len(booting) < min(batch, pending):
                    booting.add(asyncio.ensure_future(boot_replacement(host, self.generation, stop)))
                if not booting:
                    return None
                done, booting = await asyncio.wait(booting, return_when=asyncio.FIRST_COMPLETED)
                failure = None
                for task in done:  # every ready one takes its slot, even beside a failed one
                    new, why = task.result()
                    if new is not None:
                        self._take_slot(new)
                    else:
                        failure = failure or why or "no replacement"
                if failure is None:
                    continue
                if host.state == "stopping":
                    host.logs.master(f"reload interrupted (the cluster is stopping): {failure}")
                    return INTERRUPTED
                return self._aborted(failure)
        finally:
            if booting:  # an abort, or the cluster stopping: the replacements still booting are killed
                stop.set_result(None)
                for outcome in await asyncio.gather(*booting, return_exceptions=True):
                    if isinstance(outcome, tuple) and outcome[0] is not None:
                        host.retire_worker(outcome[0])  # ready before it saw the stop: not wanted now

    def _pending(self) -> list[_Slot]:
        slots = self.host.slots
        return [slots[i] for i in sorted(slots) if slots[i].generation < self.generation]

    def _take_slot(self, new: PrimaryWorker) -> None:
        """A ready replacement takes over the first slot still on the old generation,
        whose worker leaves at once; none left (scaled away, or restarted on the new
        code while it booted): the replacement is not needed."""
        host = self.host
        pending = self._pending()
        if not pending:
            host.retire_worker(new)
            return
        slot = pending[0]
        old = slot.worker
        if slot.retry is not None:
            slot.retry.cancel()
            slot.retry = None
        host.adopt(slot, new, self.generation)
        if old is not None:
            self._yielded.restore(old)  # it drains at its own priority
            host.retire_worker(old)
        self._replaced += 1
        host.counts.restarted("reload")
        self._progress(new)

    def _scale(self) -> None:
        """The config's new ``workers`` applies once the new generation is complete."""
        host = self.host
        if host.scale_after_reload is None:
            return
        was = len(host.slots)
        host.config_workers = host.scale_after_reload
        host.scale(resolve_workers(host.scale_after_reload))
        if host.wanted != was:
            host.logs.master(f"reload: workers {was} -> {host.wanted} (the config changed)")

    def _settle_forkservers(self, old_server: Any, new_server: Any, ok: bool) -> None:
        host = self.host
        retire = host.retire_forkserver
        if ok:
            retire(old_server)
            return
        host.forkserver = old_server  # the old generation keeps serving: its restarts use its code
        retire(new_server)
        if not old_server.alive() and host.state == "reloading":
            host.logs.master(f"the fork server (pid {old_server.pid}) exited during the reload; starting a new one")
            retire(old_server)
            host.restart_forkserver()


async def boot_replacement(host: BootHost, generation: int, stop: asyncio.Future[None] | None = None,
                           ) -> tuple[PrimaryWorker | None, str | None]:
    """Start a worker and wait until it is ready (``boot_timeout``): (worker, None),
    or (None, why) with its last stderr lines once it has been killed. ``stop`` done:
    kill it without waiting longer (a reload aborted by another replacement); a
    start is never cancelled half-way, so no forked worker is ever lost track of."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()
    if host.state == "stopping":
        return None, "the cluster is stopping"
    try:
        worker = await host.fork_worker(host.worker_env())
    except OSError as exc:
        return None, f"cannot start a new worker: {exc}"
    worker.heartbeat_timeout = host.cfg.timeout  # what worker_env asked of it (watchdogs)
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    host.stderr_tails[worker.id] = tail
    host.logs.attach(worker, loop, tail)
    host.booting[worker.id] = ready
    waits: set[asyncio.Future[Any]] = {ready} if stop is None else {ready, stop}
    try:
        await asyncio.wait(waits, timeout=host.cfg.boot_timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        host.booting.pop(worker.id, None)
    ok = ready.result() if ready.done() else None
    if ok:
        return worker, None
    if ok is None and stop is not None and stop.done():
        why = "was stopped (the reload was aborted)"
    else:
        why = "was not ready in time" if ok is None else f"exited ({worker.signal_code or worker.exit_code})"
    if not worker.is_dead():
        worker.signal("SIGKILL")
    lines = "\n".join("  " + line for line in tail)
    message = f"new worker {worker.id} (pid {worker.pid}) {why}"
    if lines:
        message += f"; its last stderr lines:\n{lines}"
    return None, message


# The name arbiter._replace (--max-memory) imports today, typed as loosely as it was.
