"""The master of ``pycluster run``: the library's primary plus supervision.

It owns the listeners (bound before any fork), keeps ``workers`` workers
alive, restarts crashed ones with exponential back-off, forwards their
output, answers the control socket and turns signals into the same commands
the control socket runs (STYLE habit 2). Everything happens on one asyncio
loop; signal handlers only record and wake.

The arbiter is the wiring: its parts live beside it. ``slots`` (the restart
policy), ``workforce`` (starting, restarting, retiring workers),
``readiness`` (when a worker and the first generation are ready),
``forkserver.keeper`` (``--preload``), ``watchdogs`` (``--timeout``,
``--max-memory``), ``status`` (the status reply), ``orphans`` (PID 1).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

import pycluster as cluster

from ..control import commands
from ..core import stats
from ..errors import EXIT_BOOT, EXIT_OK, EXIT_USAGE, WORKER_BOOT_ERROR, WORKER_USAGE_ERROR
from ..ipc.messages import ENV_APP_METRICS, ENV_HEARTBEAT, ENV_ONLINE, ENV_READY_FD, ENV_SERVE, ONLINE_AFTER_LOAD
from ..primary.engine import Engine, PrimaryWorker
from ..serve.options import ServeOptions
from . import engine_setup, readiness
from . import status as status_reply
from .config import RunConfig, resolve_workers
from .exporter import PUSH_PERIOD, Exporter
from .forkserver.client import ForkServer
from .forkserver.keeper import ForkServerKeeper
from .logs import LogBook
from .metrics import ClusterCounts
from .orphans import reap_orphans
from .reload import Progress, RollingReload
from .signals import SigchldSetter, captured_signals
from .slots import Slot, first_wave
from .tasks import TaskSet
from .watchdogs import HeartbeatCheck, MemoryCheck
from .workforce import STDERR_TAIL, Workforce

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine

    from ..control.server import ControlServer
    from .ops.systemd import Notifier

__all__ = ["Arbiter", "Slot", "reap_orphans", "SIGNALS", "_SIGNALS"]

# Signals become the control commands they mean (STYLE habit 2): the same code runs either way.
SIGNALS: dict[signal.Signals, dict[str, Any]] = {
    signal.SIGTERM: {"cmd": "stop"},
    signal.SIGINT: {"cmd": "stop"},
    signal.SIGQUIT: {"cmd": "stop", "now": True},
    signal.SIGTTIN: {"cmd": "scale", "delta": 1},
    signal.SIGTTOU: {"cmd": "scale", "delta": -1},
    signal.SIGUSR1: {"cmd": "reopen"},
    signal.SIGHUP: {"cmd": "reload"},
}
_SIGNALS = SIGNALS  # the name man/generate.py and tests/unit/test_docs.py import



class Arbiter:
    """One ``pycluster run`` master: the state its parts share, the loop, the
    worker events and the commands (signals and control requests alike)."""

    def __init__(self, cfg: RunConfig, name: str, control_path: str, *, version: str,
                 flags: dict[str, Any] | None = None, config_path: str | None = None):
        self.cfg = cfg
        self.cfg_flags = flags or {}
        self.cfg_path = config_path
        self.name = name
        self.control_path = control_path
        self.version = version
        self.engine: Engine = cluster._engine
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = "starting"
        self.generation = 1
        self.wanted = resolve_workers(cfg.workers)
        self.config_workers = cfg.workers  # a reload re-applies `workers` only when the file changed it
        self.reload_generation: int | None = None  # while a reload runs: what new workers run
        self.scale_after_reload: Any = None  # the config's new `workers`, applied once a reload succeeds
        self.started_at = time.time()
        self.logs = LogBook(log_file=cfg.log_file, log_format=cfg.log_format)
        from ..primary.handles import round_robin
        round_robin.warn = lambda message: self.logs.master(message.removeprefix("pycluster: "))
        self.exit_code: int | None = None
        self.done: asyncio.Future[int] | None = None
        self.stderr_tails: dict[int, deque[str]] = {}
        self.control: ControlServer | None = None
        self.boot_failure: str | None = None
        self.boot_failure_code = EXIT_BOOT
        self.strays_said: set[str] = set()  # addresses outside --bind a worker listens on, logged once
        self.booting: dict[int, asyncio.Future[bool]] = {}  # reload replacements, by worker id
        self.notify: Notifier | None = None  # systemd hooks (ops/systemd.py)
        self.tasks = TaskSet(self.logs.master)  # tasks the master owns (keep_task)
        self.workforce = Workforce(self)
        self.slots = self.workforce.slots
        self.by_worker = self.workforce.by_worker
        self.forkservers = ForkServerKeeper(self)
        self.heartbeats = HeartbeatCheck(self)
        self.memory = MemoryCheck(self)
        self.counts = ClusterCounts()  # restarts by cause, reloads by outcome
        self.exporter = Exporter(self)  # --metrics

    # -- setup (engine_setup.py) -------------------------------------------------
    def configure_engine(self) -> None:
        handlers: dict[str, Callable[..., Any]] = {
            "online": self._maybe_ready, "listening": self._on_listening,
            "exit": self._on_exit, "fork": self.exporter.attach}
        engine_setup.configure_engine(self.engine, self.cfg, handlers)

    def bind(self) -> None:
        engine_setup.bind(self.engine, self.cfg.bind)
        self.exporter.listen()

    # -- running ----------------------------------------------------------------
    async def main(self) -> int:
        import asyncio

        from ..control.server import ControlServer
        loop = self.loop = asyncio.get_running_loop()
        self.engine.attach(loop)
        for worker in list(cluster.workers.values()):  # forked before the loop existed
            self.logs.attach(worker, loop, self.stderr_tails.setdefault(worker.id, deque(maxlen=STDERR_TAIL)))
        done: asyncio.Future[int] = loop.create_future()
        self.done = done
        self._maybe_finished()  # stopped before the loop existed (a worker that could not be started)
        control = self.control = ControlServer(self, self.control_path)
        await control.start()
        code: int | None = None
        try:
            await self.exporter.start()
            with captured_signals(loop, SIGNALS, self._signal) as on_sigchld:
                code = await self._serve(done, on_sigchld)
            return code
        finally:
            self.heartbeats.cancel()
            self.memory.cancel()
            self.forkservers.close()
            await self.exporter.close()
            await control.close()
            if code is not None:  # the last line: nothing of the cluster is left, the socket is gone
                self.logs.master(f"{self.name}: stopped (exit {code})")
            self.logs.close()

    async def _serve(self, done: asyncio.Future[int], on_sigchld: SigchldSetter) -> int:
        loop = self.loop
        assert loop is not None
        if os.getpid() == 1:
            # PID 1 in a container: orphans are re-parented to us; reap them
            # (our own workers are reaped through their pidfds).
            on_sigchld(reap_orphans)
        if done.done():
            return await done
        if self.cfg.preload:
            loop.call_later(self.cfg.boot_timeout, self._check_first_generation)
            if self.forkserver is None or not await self.forkservers.ready(self.forkserver):
                return await done
            on_sigchld(self.forkservers.reap_orphans)  # we are a subreaper now
        self.start_workers()
        if not self.cfg.preload:
            loop.call_later(self.cfg.boot_timeout, self._check_first_generation)
        self.heartbeats.start()
        self.memory.start()
        return await done

    def start_workers(self) -> None:
        """Fork the first generation (before the loop exists, so the workers
        boot while the master is still importing asyncio); ``slots.first_wave``
        says how many at once, the rest follow the first ready one."""
        if self.cfg.preload and self.forkserver is None:
            try:
                self.forkserver = self.start_forkserver()  # the workers follow once it is ready
            except OSError as exc:
                self.logs.master(f"cannot start the fork server: {exc}")
                self.boot_failed(None, f"could not be started: {exc}")
            return
        wave = first_wave(self.wanted, preload=self.cfg.preload)
        for index in range(1, self.wanted + 1):
            slot = self.workforce.slot(index)
            if slot.idle():
                if index > wave and self.state == "starting":
                    slot.deferred = True
                    continue
                self.spawn(slot)

    def worker_env(self) -> dict[str, str]:
        env = dict(self.cfg.env)
        env[ENV_ONLINE] = ONLINE_AFTER_LOAD  # 'online' once the app imported, not before
        env[ENV_SERVE] = ServeOptions.from_settings(self.cfg.values).encode()  # how to serve it (SPEC 8)
        if self.cfg.timeout:
            env[ENV_HEARTBEAT] = str(self.cfg.timeout)
        if self.cfg.metrics:
            env[ENV_APP_METRICS] = str(PUSH_PERIOD)
        return env

    def rolling_reload(self, on_progress: Callable[[Progress], None] | None = None) -> RollingReload:
        """A rolling reload of this master (``start()`` it; ``await result()``)."""
        return RollingReload(self, on_progress=on_progress)

    def keep_task(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the master owns: kept until it ends, its failure logged (tasks.py)."""
        assert self.loop is not None, "tasks run on the master's loop"
        return self.tasks.keep(self.loop, coro, what)

    # -- --preload: the fork server (forkserver/keeper.py; these names are reload.py's) -----------
    @property
    def forkserver(self) -> ForkServer | None:
        return self.forkservers.current

    @forkserver.setter
    def forkserver(self, server: ForkServer | None) -> None:
        self.forkservers.current = server

    def start_forkserver(self) -> ForkServer:
        return self.forkservers.start()

    async def forkserver_ready(self, server: ForkServer) -> bool:
        return await self.forkservers.ready(server)

    def retire_forkserver(self, server: ForkServer) -> None:
        self.forkservers.retire(server)

    def restart_forkserver(self) -> None:
        self.forkservers.restart()

    # -- slots (workforce.py) ---------------------------------------------------------------------
    def spawn(self, slot: Slot) -> None:
        self.workforce.spawn(slot)

    async def fork_worker(self, env: dict[str, str]) -> PrimaryWorker:
        return await self.workforce.fork_worker(env)

    def adopt(self, slot: Slot, worker: PrimaryWorker, generation: int) -> None:
        self.workforce.adopt(slot, worker, generation)

    def retire_worker(self, worker: PrimaryWorker) -> None:
        self.workforce.retire_worker(worker)

    # -- worker events ----------------------------------------------------------
    def is_ready(self, worker: PrimaryWorker) -> bool:
        return readiness.is_ready(worker, [h.key for h in self.engine.master_listeners])

    def _strays(self, worker: PrimaryWorker) -> list[Any]:
        """The addresses ``worker`` listens on that are none of the master's listeners."""
        ours = {h.key for h in self.engine.master_listeners}
        handles = self.engine.listeners.handles
        return [handles[key].address for key in sorted(worker.listening_keys - ours) if key in handles]

    def _on_listening(self, worker: PrimaryWorker, _address: Any) -> None:
        # Allowed (Node shares any address a worker binds; an app may serve an
        # admin port too), but said at once: an app that binds another port than
        # --bind would otherwise wait out boot_timeout without a word.
        waited = [h.address for h in self.engine.master_listeners]
        if waited:
            for address in self._strays(worker):
                if str(address) not in self.strays_said:
                    self.strays_said.add(str(address))
                    self.logs.master(readiness.stray_listener(f"worker {worker.id} (pid {worker.pid})",
                                                              address, waited))
        self._maybe_ready(worker)

    def _maybe_ready(self, worker: PrimaryWorker) -> None:
        pending = self.booting.get(worker.id)
        if pending is not None:
            if self.is_ready(worker) and not pending.done():
                pending.set_result(True)
            return
        slot = self.by_worker.get(worker.id)
        if slot is None or slot.ready or slot.worker is not worker or not self.is_ready(worker):
            return
        slot.ready = True
        if slot.boot_timer is not None:
            slot.boot_timer.cancel()
            slot.boot_timer = None
        self.logs.master(f"worker {worker.id} (pid {worker.pid}) ready")
        if self.loop is not None and any(s.deferred for s in self.slots.values()):
            # Two loop turns later, so that connections already waiting are
            # handed to this worker before the master forks the others.
            self.loop.call_soon(self.loop.call_soon, self.workforce.start_deferred)
        if readiness.generation_complete(self.state, self.slots.values()):
            self._running()

    def _running(self) -> None:
        """The first generation is ready: say so (log, systemd, the daemon's parent)."""
        self.state = "running"
        self.logs.master(readiness.ready_summary(self.name, len(self.slots), self.cfg.policy,
                                                 [h.address for h in self.engine.master_listeners], os.getpid(),
                                                 [h.address for h in self.app_listeners()]))
        if self.notify is not None:
            self.notify.ready(self)
        from .ops.daemon import report
        if os.environ.get(ENV_READY_FD):
            self.logs.flush()  # the summary reaches the terminal before stdio detaches
        report(0)

    def boot_timed_out(self, worker: PrimaryWorker) -> None:
        slot = self.by_worker.get(worker.id)
        if slot is not None and slot.worker is worker and not slot.ready:
            self.logs.master(f"worker {worker.id} (pid {worker.pid}) not ready after"
                             f" {self.cfg.boot_timeout:g}s{self._where(worker)}; killing it")
            worker.signal("SIGKILL")

    def _check_first_generation(self) -> None:
        if self.state == "starting":
            slot = readiness.laggard(self.slots.values())
            worker = slot.worker if slot is not None else None
            self.boot_failed(worker, f"not ready after {self.cfg.boot_timeout:g}s"
                                     f"{self._where(worker) if worker is not None else ''}")

    def _where(self, worker: PrimaryWorker) -> str:
        return readiness.where_it_listens(self._strays(worker), [h.address for h in self.engine.master_listeners])

    def boot_failed(self, worker: PrimaryWorker | None, why: str, *, first: bool = True) -> None:
        tail = self.stderr_tails.get(worker.id, ()) if worker is not None else ()
        who = f"worker {worker.id} (pid {worker.pid})" if worker is not None else "a worker"
        self.halt(readiness.boot_failure(self.name, who, why, tail, first=first,
                                         shown=self.logs.lines_reach_stderr()))

    def halt(self, failure: str, *, code: int = EXIT_BOOT) -> None:
        """A boot failure: stop now; ``pycluster run`` prints ``failure`` and exits
        ``code`` (EXIT_BOOT; EXIT_USAGE when the target is no app it can run)."""
        self.boot_failure = failure
        self.boot_failure_code = code
        self.stop(code, immediate=True)

    def _on_exit(self, worker: PrimaryWorker, code: int | None, sig: str | None) -> None:
        self.exporter.gone(worker)  # what its app counted joins the retired totals
        pending = self.booting.get(worker.id)
        if pending is not None:
            self.logs.detach(worker)
            if not pending.done():
                pending.set_result(False)
            self._maybe_finished()  # a stop may have been waiting for this one only
            return
        slot = self.workforce.release(worker, code, sig)
        self.logs.detach(worker)
        if worker.pid is not None:
            stats.forget(worker.pid)  # the status sampler's cache: a dead pid is never sampled again
        tail = self.stderr_tails.pop(worker.id, deque())
        if slot is None:
            self._maybe_finished()
            return
        how = f"signal {sig}" if sig else f"code {code}"
        if self.state == "stopping":
            self._maybe_finished()
            return
        if worker.exited_after_disconnect:
            self.logs.master(f"worker {worker.id} (pid {worker.pid}) left ({how})")
            return
        said = [line for line in tail if line.startswith("pycluster: ")]
        if code == WORKER_USAGE_ERROR and self.state == "starting" and not slot.ready and said:
            # The first generation's target is no app pycluster can run (or an extra
            # is missing): the worker's last line says what to do; respawning cannot
            # help. Later (a replacement, while the cluster serves) the same exit is
            # a crash like any other: a worker's exit status never halts a serving cluster.
            self.halt(said[-1].removeprefix("pycluster: "), code=EXIT_USAGE)
            return
        if self.state == "starting" and not slot.ready:
            self.stderr_tails[worker.id] = tail
            self.boot_failed(worker, f"exited with {how} before it was ready")
            return
        if code == WORKER_BOOT_ERROR:
            # pycluster's own bootstrap failed in the worker (no channel, never
            # re-parented): another start cannot fare better (SPEC 4: a boot
            # failure halts instead of respawning forever; gunicorn's WORKER_BOOT_ERROR).
            self.stderr_tails[worker.id] = tail
            self.boot_failed(worker, f"exited with {how} (WORKER_BOOT_ERROR)", first=False)
            return
        uptime = time.monotonic() - slot.started
        self.logs.master(f"worker {worker.id} (pid {worker.pid}) exited with {how}"
                         f" after {uptime:.1f}s; replacing it")
        self.counts.restarted("heartbeat" if worker.id in self.heartbeats.aborted else "crash")
        self.workforce.restart(slot, crashed=uptime < self.cfg.min_uptime)

    # -- commands ----------------------------------------------------------------
    def _signal(self, signum: int, cmd: dict[str, Any]) -> None:
        """Run a signal's command on the loop; its failure is logged with its traceback (keep_task)."""
        try:
            if signum == signal.SIGINT and self.state == "stopping":
                cmd = {"cmd": "stop", "now": True}
            self.keep_task(commands.execute(self, dict(cmd)), f"{signal.Signals(signum).name} ({cmd['cmd']})")
        except Exception:  # noqa: BLE001 - a signal path never dies silently (STYLE habit 14)
            self.logs.master(f"internal error on {signal.Signals(signum).name}:\n{traceback.format_exc().rstrip()}")

    def scale(self, wanted: int) -> int:
        self.wanted = self.workforce.scale(wanted)
        return self.wanted

    def stop(self, code: int = EXIT_OK, *, immediate: bool = False) -> None:
        if self.exit_code is None:
            self.exit_code = code
        first = self.state != "stopping"
        self.state = "stopping"
        for slot in self.slots.values():
            self.workforce.cancel_pending(slot)
        if first:
            self.logs.master(f"{self.name}: stopping ({'now' if immediate else 'gracefully'})")
            if self.notify is not None:
                self.notify.stopping(self)
            for handle in list(self.engine.master_listeners):
                handle.close()  # stop accepting
        for worker in list(cluster.workers.values()):
            if immediate:
                worker.signal("SIGKILL")
            elif first:
                self.retire_worker(worker)
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.state == "stopping" and not cluster.workers and self.done is not None and not self.done.done():
            self.done.set_result(self.exit_code or EXIT_OK)

    def app_listeners(self) -> list[Any]:
        """The addresses the workers bound themselves (not --bind), once each."""
        ours = self.engine.master_listeners
        # A handle sits under two keys at times (its asked-for and its real address): once each.
        apps = {id(h): h for h in self.engine.listeners.handles.values() if h not in ours}
        return sorted(apps.values(), key=lambda h: str(h.address))

    def status(self) -> dict[str, Any]:
        return status_reply.render(self, self.engine.master_listeners, app_listeners=self.app_listeners())
