"""The master of ``pycluster run``: the library's primary plus supervision.

It owns the listeners (bound before any fork), keeps ``workers`` workers
alive, restarts crashed ones with exponential back-off, forwards their
output, answers the control socket and turns signals into the same commands
the control socket runs (STYLE habit 2). Everything happens on one asyncio
loop; signal handlers only record and wake.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

import pycluster as cluster

from ..control import commands
from ..core.common import POLICY_BY_NAME
from ..errors import EXIT_BOOT, EXIT_OK
from ..primary.engine import PrimaryWorker, _credentials, exec_refused
from .config import RunConfig, resolve_workers
from .logs import LogBook
from .watchdogs import HeartbeatCheck, MemoryCheck, memory_warning

if TYPE_CHECKING:
    import asyncio

STDERR_TAIL = 20


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _uid_gid(cfg: Any) -> tuple[Any, Any]:
    def norm(v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.isdigit() else v
    return norm(cfg.user), norm(cfg.group)


class Slot:
    """A place for one worker; survives its restarts."""

    __slots__ = ("index", "worker", "restarts", "fails", "started", "ready", "retry", "last_exit",
                 "generation", "boot_timer", "replacing", "deferred", "launching", "memory_fresh",
                 "memory_hold")

    def __init__(self, index: int):
        self.index = index
        self.worker: PrimaryWorker | None = None
        self.restarts = 0
        self.fails = 0
        self.started = 0.0
        self.ready = False
        self.retry: asyncio.TimerHandle | None = None
        self.last_exit: dict | None = None
        self.generation = 0
        self.boot_timer: asyncio.TimerHandle | None = None
        self.replacing = False
        self.deferred = False  # waits for the first worker of the first generation
        self.launching: asyncio.Task | None = None  # --preload: waits for the fork server's reply
        self.memory_fresh: int | None = None  # a --max-memory replacement not yet seen under the limit
        self.memory_hold: tuple | None = None  # (worker id, limit, rss): not replaced for memory (watchdogs)


class Arbiter:
    def __init__(self, cfg: RunConfig, name: str, control_path: str, *, version: str,
                 flags: dict | None = None, config_path: str | None = None):
        self.cfg = cfg
        self.cfg_flags = flags or {}
        self.cfg_path = config_path
        self.name = name
        self.control_path = control_path
        self.version = version
        self.engine = cluster._engine
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state = "starting"
        self.generation = 1
        self.wanted = resolve_workers(cfg.workers)
        self.config_workers = cfg.workers  # a reload re-applies `workers` only when the file changed it
        self.reload_generation: int | None = None  # while a reload runs: what new workers run
        self.scale_after_reload: Any = None  # the config's new `workers`, applied once a reload succeeds
        self.slots: dict[int, Slot] = {}
        self.by_worker: dict[int, Slot] = {}
        self.started_at = time.time()
        self.logs = LogBook(log_file=cfg.log_file)
        from ..primary.handles import round_robin
        round_robin.warn = lambda message: self.logs.master(message.removeprefix("pycluster: "))
        self.exit_code: int | None = None
        self.done: asyncio.Future | None = None
        self.stderr_tails: dict[int, deque] = {}
        self.forkserver: Any = None  # --preload
        self._forkserver_pids: set[int] = set()
        self._forkserver_task: Any = None
        self.control = None
        self.boot_failure: str | None = None
        self.booting: dict[int, asyncio.Future] = {}  # reload replacements, by worker id
        self.notify = None  # systemd hooks (issue: operations)
        self.tasks: set[asyncio.Task] = set()  # tasks the master owns (keep_task)
        self.heartbeats = HeartbeatCheck(self)
        self.memory = MemoryCheck(self)

    # -- setup ----------------------------------------------------------------
    def configure_engine(self) -> None:
        script = self.cfg.app.endswith(".py") or (os.sep in self.cfg.app and ":" not in self.cfg.app)
        if script and not os.path.isfile(self.cfg.app):
            raise ValueError(f"no such script: {self.cfg.app!r} (in {os.getcwd()})")
        if self.cfg.preload and script:
            raise ValueError(f"--preload needs a module:callable target (it imports the app once);"
                             f" {self.cfg.app!r} is a script, which can only run as __main__ in each worker")
        cluster.scheduling_policy = POLICY_BY_NAME[self.cfg.policy]
        # stdin from /dev/null; stdout and stderr are read line by line (logs.py).
        settings: dict[str, Any] = {"silent": True, "stdio": ["ignore", "pipe", "pipe"], "args": [],
                                    "exec_argv": []}
        if self.cfg.chdir:
            settings["cwd"] = self.cfg.chdir
        uid, gid = _uid_gid(self.cfg)
        if uid:
            settings["uid"] = uid
        if gid:
            settings["gid"] = gid
        _credentials(settings.get("uid"), settings.get("gid"))  # SettingsError now, not at each fork
        cluster.setup_primary(**settings)
        self.engine.worker_command = ["-m", "pycluster.child.entry", self.cfg.app]
        cluster.on("online", self._on_online)
        cluster.on("listening", self._on_listening)
        cluster.on("exit", self._on_exit)

    def bind(self) -> None:
        """Bind every --bind address before any fork (fails fast, nothing started).
        Sockets passed by systemd socket activation come first."""
        from .ops.systemd import activation_fds
        for fd in activation_fds():
            self.engine.add_listener(f"fd://{fd}")
            os.close(fd)  # the handle holds its own duplicate
        for spec in self.cfg.bind:
            try:
                self.engine.add_listener(spec)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {spec}: {exc.strerror or exc}") from None

    # -- running ----------------------------------------------------------------
    async def main(self) -> int:
        import asyncio
        self.loop = asyncio.get_running_loop()
        self.engine.attach(self.loop)
        for worker in list(cluster.workers.values()):  # forked before the loop existed
            self.logs.attach(worker, self.loop, self.stderr_tails.setdefault(worker.id, deque(maxlen=STDERR_TAIL)))
        self.done = self.loop.create_future()
        self._maybe_finished()  # stopped before the loop existed (a worker that could not be started)
        from ..control.server import ControlServer
        self.control = ControlServer(self, self.control_path)
        await self.control.start()
        for signum, cmd in _SIGNALS.items():
            self.loop.add_signal_handler(signum, self._signal, signum, cmd)
        if os.getpid() == 1:
            # PID 1 in a container: orphans are re-parented to us; reap them
            # (our own workers are reaped through their pidfds).
            self.loop.add_signal_handler(signal.SIGCHLD, reap_orphans)
        try:
            if self.done.done():
                return await self.done
            if self.cfg.preload:
                self.loop.call_later(self.cfg.boot_timeout, self._check_first_generation)
                if not await self._forkserver_ready(self.forkserver):
                    return await self.done
                self.loop.add_signal_handler(signal.SIGCHLD, self._reap_orphans)  # we are a subreaper now
            self.start_workers()
            if not self.cfg.preload:
                self.loop.call_later(self.cfg.boot_timeout, self._check_first_generation)
            self.heartbeats.start()
            self.memory.start()
            return await self.done
        finally:
            self.heartbeats.cancel()
            self.memory.cancel()
            for signum in _SIGNALS:
                self.loop.remove_signal_handler(signum)
            if os.getpid() == 1 or self.cfg.preload:
                self.loop.remove_signal_handler(signal.SIGCHLD)
            if self._forkserver_task is not None:
                self._forkserver_task.cancel()
            if self.forkserver is not None:
                self._retire_forkserver(self.forkserver)
            await self.control.close()
            self.logs.close()

    def start_workers(self) -> None:
        """Fork the first generation (before the loop exists, so the workers
        boot while the master is still importing asyncio).

        Booting interpreters is CPU-bound: when there are more workers than
        spare cores, only as many as there are spare cores (at least one)
        start at once and the rest follow as soon as the first is ready. The
        cluster then serves after one worker's boot time instead of after
        all of them shared the cores, and an app that fails at import fails
        in one worker, not in every one."""
        if self.cfg.preload:
            if self.forkserver is None:
                try:
                    self.forkserver = self.start_forkserver()  # the workers follow once it is ready
                except OSError as exc:
                    self.logs.master(f"cannot start the fork server: {exc}")
                    self._boot_failed(None, f"could not be started: {exc}")
                return
            wave = self.wanted  # forking is cheap: all at once
        else:
            wave = max(1, _cpus() - 1)
        for index in range(1, self.wanted + 1):
            slot = self._slot(index)
            if slot.worker is None and slot.retry is None and slot.launching is None:
                if index > wave and self.state == "starting":
                    slot.deferred = True
                    continue
                self.spawn(slot)

    # -- --preload: the fork server ------------------------------------------------
    def start_forkserver(self):
        from .forkserver import ForkServer
        settings = self.engine.settings
        credentials = _credentials(settings.get("uid"), settings.get("gid"))
        server = ForkServer(self.cfg.app, env={**os.environ, **self.worker_env()}, cwd=settings.get("cwd"),
                            credentials=credentials)
        try:
            server.start()
        except PermissionError as exc:
            raise exec_refused(exc, "the fork server", sys.executable, settings.get("uid"), settings.get("gid"),
                               switching=bool(credentials)) from None
        return server

    async def _forkserver_ready(self, server) -> bool:
        """Wait until ``server`` imported the app; then it launches workers."""
        self._forward_output(server)
        error = await server.wait_ready(self.cfg.boot_timeout)
        if error is not None:
            self._retire_forkserver(server)
            if self.state == "starting":
                self.boot_failure = f"{self.name}: the fork server could not load the app: {error}"
                self.stop(EXIT_BOOT, immediate=True)
            return False
        self.logs.master(f"fork server (pid {server.pid}) loaded {self.cfg.app}")
        self.loop.add_reader(server.pidfd, self._forkserver_exited, server)
        server.log = lambda line: self.logs.master(line)
        server.on_stall = self._forkserver_stalled
        server.listen(self.loop)
        if server is self.forkserver:
            self._restart_waiting()
        return True

    def _restart_waiting(self) -> None:
        """A new fork server is ready: slots backing off after failed starts start now."""
        for slot in self.slots.values():
            if slot.worker is None and slot.launching is None and slot.retry is not None:
                slot.retry.cancel()
                self.spawn(slot)

    def _forkserver_stalled(self, server) -> None:
        """A fork request went unanswered: the fork server is stuck (an app's
        at-fork hook, a signal handler, a debugger...). Kill it: its exit
        starts a fresh one (``_forkserver_exited``) and the slot that waited
        restarts as after any failed start."""
        self.logs.master(f"the fork server (pid {server.pid}) did not answer a fork request within"
                         f" {server.timeout:g}s: stalled; killing it")
        if server.pidfd is not None:
            try:
                signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
            except OSError:
                pass

    def _forward_output(self, server) -> None:
        from .logs import LineSplitter
        for pipe in (server.proc.stdout, server.proc.stderr):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            lines = LineSplitter()  # the app's import-time output: cut, made printable

            def read(fd: int = fd, pipe=pipe, lines=lines) -> None:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if not data:
                    for line in lines.flush():
                        self.logs.master("fork server: " + line)
                    self.loop.remove_reader(fd)
                    pipe.close()
                    return
                for line in lines.feed(data):
                    self.logs.master("fork server: " + line)
            self.loop.add_reader(fd, read)

    def _forkserver_exited(self, server) -> None:
        self.loop.remove_reader(server.pidfd)
        server.reap()
        if server is not self.forkserver or self.state in ("stopping", "reloading"):
            return  # (a reload's new fork server: the reload fails and keeps the old one)
        self.logs.master(f"the fork server (pid {server.pid}) exited with {server.proc.returncode};"
                         f" starting a new one")
        self._retire_forkserver(server)
        self.restart_forkserver()

    def restart_forkserver(self) -> None:
        self.forkserver = self.start_forkserver()
        self._forkserver_task = self.loop.create_task(self._forkserver_ready(self.forkserver))

    def _reap_orphans(self) -> None:
        server = self.forkserver
        reap_orphans(skip=self._forkserver_pids | ({server.pid} if server is not None else set()))

    def _retire_forkserver(self, server) -> None:
        """Close its socket (it exits at the EOF); reap it when its pidfd says so."""
        server.stop()
        if server.pidfd is None or self.loop is None or self.loop.is_closed():
            return
        self._forkserver_pids.add(server.pid)  # reaped here, not as an orphan
        try:
            self.loop.remove_reader(server.pidfd)
        except (ValueError, OSError):
            pass
        self.loop.add_reader(server.pidfd, self._forkserver_gone, server)
        self.loop.call_later(5.0, self._forkserver_late, server)

    def _forkserver_gone(self, server) -> None:
        if server.pidfd is not None:
            self.loop.remove_reader(server.pidfd)
        server.reap()
        self._forkserver_pids.discard(server.pid)

    def _forkserver_late(self, server) -> None:
        if server.pidfd is not None and server.proc.poll() is None:
            server.proc.kill()  # the pidfd reader reaps it

    def _start_deferred(self) -> None:
        for slot in self.slots.values():
            if slot.deferred:
                slot.deferred = False
                if slot.worker is None and slot.retry is None and slot.launching is None:
                    self.spawn(slot)

    def _slot(self, index: int) -> Slot:
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = Slot(index)
        return slot

    def spawn(self, slot: Slot) -> None:
        if self.state == "stopping":
            return
        slot.retry = None
        env = self.worker_env()
        if self.cfg.preload and self.loop is not None:
            generation = self.reload_generation or self.generation  # the fork server asked now runs it
            slot.launching = self.loop.create_task(self._spawn_forked(slot, env, generation))
            slot.launching.add_done_callback(self._task_done)
            return
        try:
            worker = cluster.fork(env)
        except OSError as exc:
            self.logs.master(f"cannot start a worker: {exc}")
            if isinstance(exc, PermissionError) and self.state == "starting":
                # The exec itself was refused: no retry can fix that (SPEC 4:
                # a boot failure halts instead of respawning forever).
                self._boot_failed(None, f"could not be started: {exc}")
                return
            self._schedule_restart(slot, crashed=True)
            return
        self._spawned(slot, worker)

    async def fork_worker(self, env: dict[str, str]) -> PrimaryWorker:
        """Start a worker: spawned, or (--preload) forked by the fork server
        without ever blocking the loop. Raises OSError if it cannot start."""
        if not self.cfg.preload:
            return cluster.fork(env)
        from .forkserver import ForkServerError
        server = self.forkserver
        if server is None or not server.ready:
            raise ForkServerError("the fork server is not ready (a new one is starting)")
        return await self.engine.fork_async(env, server.launch)

    async def _spawn_forked(self, slot: Slot, env: dict[str, str], generation: int) -> None:
        try:
            worker = await self.fork_worker(env)
        except Exception as exc:  # noqa: BLE001 - a failed start is the restart policy's to handle
            slot.launching = None
            if self.state != "stopping" and self.slots.get(slot.index) is slot:
                self.logs.master(f"cannot start a worker: {exc if isinstance(exc, OSError) else repr(exc)}")
                self._schedule_restart(slot, crashed=True)
            return
        slot.launching = None
        if self.state == "stopping":
            worker.signal("SIGKILL")
            return
        if self.slots.get(slot.index) is not slot or slot.worker is not None:
            self.retire_worker(worker)  # scaled away, or a reload's replacement took the slot meanwhile
            return
        self._spawned(slot, worker, generation)

    def _task_done(self, task: Any) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.logs.master(f"internal error while starting a worker: {exc!r}")
            import traceback
            for line in "".join(traceback.format_exception(exc)).splitlines():
                self.logs.master("  " + line)

    def _spawned(self, slot: Slot, worker: PrimaryWorker, generation: int | None = None) -> None:
        slot.worker = worker
        slot.ready = False
        slot.started = time.monotonic()
        slot.generation = generation or self.reload_generation or self.generation
        self.by_worker[worker.id] = slot
        worker.heartbeat_timeout = self.cfg.timeout  # what worker_env asked of it (watchdogs)
        self.stderr_tails[worker.id] = deque(maxlen=STDERR_TAIL)
        if self.loop is not None:
            self.logs.attach(worker, self.loop, self.stderr_tails[worker.id])
        if self.state != "starting":
            slot.boot_timer = self.loop.call_later(self.cfg.boot_timeout, self._boot_timed_out, worker)

    def worker_env(self) -> dict[str, str]:
        env = dict(self.cfg.env)
        env["PYCLUSTER_ONLINE"] = "after-load"  # 'online' once the app imported, not before
        if self.cfg.timeout:
            env["PYCLUSTER_HEARTBEAT"] = str(self.cfg.timeout)
        return env

    def keep_task(self, coro: Any, what: str) -> asyncio.Task:
        """Run ``coro`` as a task the master owns: kept until it ends, its failure logged."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self.tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
                self.logs.master(f"{what} failed: {exc!r}\n{trace}")

        task.add_done_callback(done)
        return task

    async def _replace(self, slot: Slot) -> None:
        """--max-memory: replace the slot's worker, the new one ready first."""
        from .reload import _boot_replacement
        slot.replacing = True
        generation = slot.generation
        try:
            new, failure = await _boot_replacement(self, generation)
            if failure is not None:
                self.logs.master(f"replacement abandoned: {failure}" if self.state == "stopping"
                                 else f"replacement failed: {failure}")
                return
            # While it booted the slot may have been scaled away, reloaded, or the cluster stopped:
            # a replacement nobody tracks would serve on, outside every reload and stop.
            why = ("the cluster is stopping" if self.state == "stopping"
                   else f"slot {slot.index} was scaled away" if self.slots.get(slot.index) is not slot
                   else f"slot {slot.index} was reloaded meanwhile" if slot.generation != generation
                   else None)
            if why is not None:
                self.logs.master(f"worker {new.id} (pid {new.pid}) is no longer wanted ({why}); stopping it")
                self.retire_worker(new)
                return
            old = slot.worker
            self.adopt(slot, new, generation)
            slot.restarts += 1
            slot.memory_fresh = new.id
            if old is not None:
                self.retire_worker(old)
        finally:
            slot.replacing = False

    def is_ready(self, worker: PrimaryWorker) -> bool:
        keys = {h.key for h in self.engine.master_listeners}
        if not keys:
            return worker.state in ("online", "listening")
        return keys <= worker.listening_keys

    def _on_online(self, worker: PrimaryWorker) -> None:
        self._maybe_ready(worker)

    def _on_listening(self, worker: PrimaryWorker, address: Any) -> None:
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
        if any(s.deferred for s in self.slots.values()):
            # Two loop turns later, so that connections already waiting are
            # handed to this worker before the master forks the others.
            self.loop.call_soon(self.loop.call_soon, self._start_deferred)
        if self.state == "starting" and all(s.ready for s in self.slots.values()):
            self.state = "running"
            listen = ", ".join(_fmt_address(h.address) for h in self.engine.master_listeners) or "no listeners"
            self.logs.master(f"{self.name} ready: {len(self.slots)} workers, policy {self.cfg.policy},"
                             f" {listen} (master pid {os.getpid()})")
            if self.notify is not None:
                self.notify.ready(self)
            from .ops.daemon import report
            if os.environ.get("PYCLUSTER_READY_FD"):
                self.logs.flush()  # the summary reaches the terminal before stdio detaches
            report(0)

    def _boot_timed_out(self, worker: PrimaryWorker) -> None:
        slot = self.by_worker.get(worker.id)
        if slot is not None and slot.worker is worker and not slot.ready:
            self.logs.master(f"worker {worker.id} (pid {worker.pid}) not ready after"
                             f" {self.cfg.boot_timeout:g}s; killing it")
            worker.signal("SIGKILL")

    def _check_first_generation(self) -> None:
        if self.state == "starting":
            waiting = [s for s in self.slots.values() if not s.ready]
            worker = waiting[0].worker if waiting else None
            self._boot_failed(worker, f"not ready after {self.cfg.boot_timeout:g}s")

    def _boot_failed(self, worker: PrimaryWorker | None, why: str) -> None:
        tail = list(self.stderr_tails.get(worker.id, ())) if worker is not None else []
        who = f"worker {worker.id} (pid {worker.pid})" if worker is not None else "a worker"
        lines = [f"{self.name}: the first generation never became ready: {who} {why}"]
        if tail:
            lines.append(f"last lines of {who}'s stderr:")
            lines.extend("  " + line for line in tail)
        self.boot_failure = "\n".join(lines)
        self.stop(EXIT_BOOT, immediate=True)

    def adopt(self, slot: Slot, worker: PrimaryWorker, generation: int) -> None:
        """A reload's ready replacement takes over the slot."""
        old = slot.worker
        if old is not None:
            self.by_worker.pop(old.id, None)
        slot.worker = worker
        slot.ready = True
        slot.started = time.monotonic()
        slot.generation = generation
        slot.fails = 0
        self.by_worker[worker.id] = slot
        self.logs.master(f"worker {worker.id} (pid {worker.pid}) ready (generation {generation})")

    def _on_exit(self, worker: PrimaryWorker, code: int | None, sig: str | None) -> None:
        pending = self.booting.get(worker.id)
        if pending is not None:
            self.logs.detach(worker)
            if not pending.done():
                pending.set_result(False)
            self._maybe_finished()  # a stop may have been waiting for this one only
            return
        slot = self.by_worker.pop(worker.id, None)
        self.logs.detach(worker)
        tail = self.stderr_tails.pop(worker.id, deque())
        if slot is None:
            self._maybe_finished()
            return
        if slot.boot_timer is not None:
            slot.boot_timer.cancel()
            slot.boot_timer = None
        how = f"signal {sig}" if sig else f"code {code}"
        slot.last_exit = {"code": code, "signal": sig, "at": time.time()}
        if slot.worker is worker:
            slot.worker = None
        if self.state == "stopping":
            self._maybe_finished()
            return
        if worker.exited_after_disconnect:
            self.logs.master(f"worker {worker.id} (pid {worker.pid}) left ({how})")
            return
        if self.state == "starting" and not slot.ready:
            self.stderr_tails[worker.id] = tail
            self._boot_failed(worker, f"exited with {how} before it was ready")
            return
        uptime = time.monotonic() - slot.started
        self.logs.master(f"worker {worker.id} (pid {worker.pid}) exited with {how}"
                         f" after {uptime:.1f}s; replacing it")
        self._schedule_restart(slot, crashed=uptime < self.cfg.min_uptime)

    def _schedule_restart(self, slot: Slot, *, crashed: bool) -> None:
        slot.restarts += 1
        if not crashed:
            slot.fails = 0
            self.spawn(slot)
            return
        slot.fails += 1
        if slot.fails == 1:
            self.spawn(slot)  # one fast crash is replaced at once; repeated ones back off
            return
        delay = min(self.cfg.restart_delay * (2 ** (slot.fails - 2)), self.cfg.max_restart_delay)
        self.logs.master(f"slot {slot.index} is crash-looping: next start in {delay:.2f}s")
        if self.loop is None:
            return  # the first generation, before the loop exists: main() starts the slot again
        slot.retry = self.loop.call_later(delay, self.spawn, slot)

    def slot_state(self, slot: Slot) -> str:
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

    # -- commands ----------------------------------------------------------------
    def _signal(self, signum: int, cmd: dict) -> None:
        if signum == signal.SIGINT and self.state == "stopping":
            cmd = {"cmd": "stop", "now": True}
        self.loop.create_task(commands.execute(self, dict(cmd)))

    def scale(self, wanted: int) -> int:
        wanted = max(0, min(4096, wanted))
        self.wanted = wanted
        live = sorted(self.slots)
        while len(self.slots) < wanted:
            index = 1
            while index in self.slots:
                index += 1
            self.spawn(self._slot(index))
        for index in reversed(live):
            if len(self.slots) <= wanted:
                break
            self.retire(self.slots.pop(index))
        return wanted

    def retire(self, slot: Slot) -> None:
        """Gracefully stop a slot's worker (SIGKILL after graceful_timeout)."""
        if slot.retry is not None:
            slot.retry.cancel()
            slot.retry = None
        if slot.launching is not None:
            slot.launching.cancel()  # the worker the fork server may still fork is killed (forkserver.py)
            slot.launching = None
        worker = slot.worker
        if worker is None:
            return
        self.retire_worker(worker)

    def retire_worker(self, worker: PrimaryWorker) -> None:
        worker.disconnect()
        self.loop.call_later(self.cfg.graceful_timeout, self._kill_late, worker)

    @staticmethod
    def _kill_late(worker: PrimaryWorker) -> None:
        if not worker.is_dead():
            worker.signal("SIGKILL")

    def stop(self, code: int = EXIT_OK, *, immediate: bool = False) -> None:
        if self.exit_code is None:
            self.exit_code = code
        first = self.state != "stopping"
        self.state = "stopping"
        for slot in self.slots.values():
            if slot.retry is not None:
                slot.retry.cancel()
                slot.retry = None
            if slot.launching is not None:
                slot.launching.cancel()  # a worker the fork server still forks is killed (forkserver.py)
                slot.launching = None
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

    # -- status -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from ..core.stats import sample
        workers = []
        for index in sorted(self.slots):
            slot = self.slots[index]
            worker = slot.worker
            pid = worker.pid if worker is not None else None
            cpu, rss = sample(pid) if pid else (None, None)
            conns = None
            if worker is not None:
                counts = [h.connections(worker) for h in self.engine.master_listeners]
                known = [c for c in counts if c is not None]
                conns = sum(known) if known else None
            workers.append({
                "id": worker.id if worker is not None else None, "pid": pid,
                "generation": slot.generation, "state": self.slot_state(slot),
                "uptime_s": round(time.monotonic() - slot.started, 3) if worker is not None else 0.0,
                "restarts": slot.restarts, "connections": conns, "cpu_percent": cpu, "rss_bytes": rss,
                "last_exit": slot.last_exit, "warning": memory_warning(slot, self.cfg.max_memory),
            })
        return {
            "name": self.name, "pid": os.getpid(), "version": self.version, "state": self.state,
            "policy": self.cfg.policy, "generation": self.generation, "workers_wanted": self.wanted,
            "uptime_s": round(time.time() - self.started_at, 3), "target": self.cfg.app,
            "listeners": [self._listener(h) for h in self.engine.master_listeners],
            "workers": workers,
        }

    @staticmethod
    def _listener(handle: Any) -> dict[str, Any]:
        a = handle.address
        return {"address": a.address, "port": a.port, "address_type": a.address_type}


def reap_orphans(skip: Any = ()) -> int:
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


_SIGNALS = {
    signal.SIGTERM: {"cmd": "stop"},
    signal.SIGINT: {"cmd": "stop"},
    signal.SIGQUIT: {"cmd": "stop", "now": True},
    signal.SIGTTIN: {"cmd": "scale", "delta": 1},
    signal.SIGTTOU: {"cmd": "scale", "delta": -1},
    signal.SIGUSR1: {"cmd": "reopen"},
    signal.SIGHUP: {"cmd": "reload"},
}


def _fmt_address(a: Any) -> str:
    """A listener for the log: HTTP ones as URLs."""
    return str(a) if isinstance(a.address_type, str) or a.address_type == -1 else f"http://{a}"

