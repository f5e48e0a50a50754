"""The primary side of the cluster: the lifecycle of its workers and the
internal-message table.

One :class:`Engine` per process. It runs on an asyncio loop: child exits
arrive through pidfds (no SIGCHLD, no signal ever sent to a recycled pid),
each worker's IPC channel is a reader on the same loop, and every internal
message is dispatched through a table. Nothing here sends a signal from a
signal handler or mutates state from another thread.

Its parts: ``settings`` (setup_primary's checks, env tuning), ``spawn``
(argv, stdio, credentials, the Launcher protocol), ``worker``
(PrimaryWorker), ``listeners`` (the handle registry and the POLICIES table).
"""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.common import SCHED_RR, wrap_received_fd
from ..core.worker import Address, WorkerState
from ..errors import ClusterError
from ..ipc.channel import KIND_INTERNAL, KIND_USER, Channel
from ..ipc.messages import (
    ACT,
    CLOSE,
    DISCONNECT,
    EXITED_AFTER_DISCONNECT,
    HEARTBEAT,
    LISTENING,
    ONLINE,
    QUERY,
)
from ._signals import stop_signals_handled
from .handles import Handle
from .listeners import Listeners
from .settings import Tuning, check_policy, default_settings, validate_settings
from .spawn import ForkPlan, Launcher, Process, credentials, exec_refused
from .worker import PrimaryWorker

if TYPE_CHECKING:  # imported when the loop starts, not before the first fork
    import asyncio

    from ..core.events import EventEmitter

__all__ = ["Engine", "PrimaryWorker", "exec_refused", "credentials"]



class Facade(Protocol):
    """What the engine uses of the ``pycluster`` module (the Node facade)."""

    _emitter: EventEmitter

    def _set_settings(self, merged: dict[str, Any]) -> None: ...


class Engine:
    """The cluster primary (one per process)."""

    def __init__(self, facade: Any):
        self._facade: Facade = facade  # the pycluster module: its emitter, settings and `scheduling_policy`
        self.settings: dict[str, Any] = {}
        self.workers: dict[int, PrimaryWorker] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.policy: int | None = None
        self.listeners = Listeners()
        self._next_id = 1
        self._before_loop: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._done: asyncio.Future[int] | None = None
        self._disconnect_callbacks: list[Callable[[], Any]] = []
        self._stopping = False  # a stop signal arrived (run()/serve()); a second one kills
        # The CLI master runs workers as `python -m pycluster.child.entry ...`
        # instead of re-running the main script (settings exec/args).
        self.worker_command: list[str] | None = None

    @property
    def master_listeners(self) -> list[Handle]:
        """The primary's own listeners (``--bind``, ``pycluster.listen``), in order."""
        return self.listeners.master

    # -- the loop -------------------------------------------------------------
    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        if self.loop is None:
            self._before_loop.append((fn, args))
        else:
            self.loop.call_soon(fn, *args)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            return
        if self.loop is not None and not self.loop.is_closed():
            raise ClusterError("the cluster is already running on another event loop")
        self.loop = loop
        self.listeners.attach(loop)
        for worker in list(self.workers.values()):
            worker._watch(loop, self._reap)
        queued, self._before_loop = self._before_loop, []
        for fn, args in queued:
            loop.call_soon(fn, *args)

    def _current_loop(self) -> asyncio.AbstractEventLoop | None:
        if self.loop is None:
            asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
            running = asyncio._get_running_loop() if asyncio is not None else None
            if running is not None:
                self.attach(running)
        return self.loop

    def emit(self, event: str, *args: Any) -> None:
        self._facade._emitter.emit(event, *args)

    def handler_failed(self, exc: BaseException) -> None:
        """An event handler raised: like an uncaught exception in Node, it
        ends run()/serve() with that exception."""
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)
        elif self.loop is not None:
            self.loop.call_exception_handler({"message": "exception in a pycluster event handler",
                                              "exception": exc})
        else:
            raise exc


    # -- settings -------------------------------------------------------------
    def setup_primary(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        options = dict(options or {})
        validate_settings(options)
        merged = {**default_settings(), **self.settings, **options}
        self.settings = merged
        self._facade._set_settings(merged)
        if self.policy is None:
            self._freeze_policy()
        self.call_soon(self.emit, "setup", merged)
        return merged

    def _freeze_policy(self) -> None:
        policy = check_policy(getattr(self._facade, "scheduling_policy", SCHED_RR))
        # PYCLUSTER_RR_WINDOW / PYCLUSTER_HANDOFF_TIMEOUT are read (and checked)
        # now, not at import: `pycluster status` must not die of a bad value it never uses.
        self.listeners.tuning = Tuning.from_env()
        self.listeners.policy = self.policy = policy

    # -- fork -----------------------------------------------------------------
    def fork(self, env: dict[str, Any] | None = None) -> PrimaryWorker:
        worker, plan = self._plan_fork(env)
        launcher: Launcher[Process] = subprocess.Popen
        return self._started(worker, plan, plan.launch(launcher))

    async def fork_async(self, env: dict[str, Any] | None,
                         launcher: Launcher[Awaitable[Process]]) -> PrimaryWorker:
        """fork() through an asynchronous launcher (a --preload fork server):
        ``launcher(argv, **popen_kwargs)`` sends its request at once (the
        descriptors travel with it) and returns an awaitable for the process.
        The worker exists (in ``workers``, "fork" emitted) only once its pid is
        known, so nothing ever sees a worker without a process; the loop
        serves meanwhile."""
        worker, plan = self._plan_fork(env)
        pending = plan.launch(launcher)
        try:
            popen = await pending
        except BaseException:
            plan.abandon()  # the request failed or was given up: a late worker finds its channel closed
            raise
        return self._started(worker, plan, popen)

    def _plan_fork(self, env: dict[str, Any] | None) -> tuple[PrimaryWorker, ForkPlan]:
        self.setup_primary()
        worker = PrimaryWorker(self, self._next_id)
        self._next_id += 1
        return worker, ForkPlan(self.settings, worker.id, env, self.worker_command)

    def _started(self, worker: PrimaryWorker, plan: ForkPlan, popen: Process) -> PrimaryWorker:
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:
            plan.abandon()  # gone (and reaped as an orphan) before we could watch it
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
            raise
        channel = Channel(plan.parent_end, None, on_message=lambda k, o, f: self._on_message(worker, k, o, f),
                          on_close=lambda: self._on_channel_close(worker),
                          on_error=lambda exc: self._on_channel_error(worker, exc))
        worker._started(popen, pidfd, channel, plan.our_stdio())
        self.workers[worker.id] = worker
        loop = self._current_loop()
        if loop is not None:
            worker._watch(loop, self._reap)
        self.call_soon(self.emit, "fork", worker)
        return worker

    # -- exits and disconnects -----------------------------------------------
    def _reap(self, worker: PrimaryWorker) -> None:
        status = worker._poll_exit()
        if status is None:
            return  # not yet (spurious wake-up)
        code, sig = status
        assert self.loop is not None
        worker._reaped(self.loop, code, sig)
        if worker._disconnected:
            self._forget(worker)
        worker.emit("exit", code, sig)
        self.emit("exit", worker, code, sig)
        self._check_done()

    def _on_channel_close(self, worker: PrimaryWorker) -> None:
        if worker._disconnected:
            return
        worker._disconnected = True
        self.listeners.release_all(worker)
        if worker.state != WorkerState.DEAD:
            worker.state = WorkerState.DISCONNECTED
        worker.exited_after_disconnect = bool(worker.exited_after_disconnect)
        if worker._exited:
            self._forget(worker)
        worker.emit("disconnect")
        self.emit("disconnect", worker)
        if worker._kill_signal is not None:
            worker._send_signal(worker._kill_signal)
        self._check_done()

    def _on_channel_error(self, worker: PrimaryWorker, exc: BaseException) -> None:
        if worker.listener_count("error"):
            worker.emit("error", exc)
        else:
            print(f"pycluster: worker {worker.id} (pid {worker.pid}): {exc}", file=sys.stderr)

    def _forget(self, worker: PrimaryWorker) -> None:
        if self.workers.get(worker.id) is worker:
            del self.workers[worker.id]

    def disconnect_worker(self, worker: PrimaryWorker) -> None:
        """Stop routing to ``worker`` at once and ask it to leave."""
        if worker._disconnecting or worker._channel is None or not worker.is_connected():
            return
        worker._disconnecting = True
        self.listeners.release_all(worker)  # stop routing to it at once
        worker._channel.send(KIND_INTERNAL, {ACT: DISCONNECT, "signal": worker._kill_signal is None})

    def disconnect(self, callback: Callable[[], Any] | None = None) -> None:
        for worker in list(self.workers.values()):
            if worker.is_connected():
                worker.disconnect()
        if callback is not None:
            self._disconnect_callbacks.append(callback)
        self.call_soon(self._check_done)

    def _check_done(self) -> None:
        if self.workers:
            return
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, []
        for cb in callbacks:
            try:
                cb()
            except BaseException as exc:  # noqa: BLE001
                self.handler_failed(exc)
        if self._done is not None and not self._done.done() and not self.workers and self.loop is not None:
            self.loop.call_soon(self._finish_if_idle)

    def _finish_if_idle(self) -> None:
        if not self.workers and self._done is not None and not self._done.done():
            self._done.set_result(0)

    # -- internal messages ------------------------------------------------------
    def _on_message(self, worker: PrimaryWorker, kind: int, obj: Any, fds: list[int]) -> None:
        if kind == KIND_USER:
            handle = wrap_received_fd(fds[0]) if fds else None
            for fd in fds[1:]:
                os.close(fd)
            worker.emit("message", obj, handle)
            self.emit("message", worker, obj, handle)
            return
        act = obj.get(ACT) if isinstance(obj, dict) else None
        if act == QUERY:
            # The only internal message that may carry a descriptor: the
            # socket of a worker's listen(fd=N).
            try:
                _query(self, worker, obj, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            return
        for fd in fds:
            os.close(fd)
        method = ACTS.get(act) if isinstance(act, str) else None
        if method is None:
            self._on_channel_error(worker, ClusterError(f"unknown internal message {act!r} from worker"))
            return
        method(self, worker, obj)


    # -- listeners ------------------------------------------------------------
    def add_listener(self, spec: Any, *, kind: str | None = None) -> Handle:
        """A listener owned by the primary (``--bind``): it outlives its workers,
        and a worker gets it with ``pycluster.listen()`` or by binding its address."""
        if self.policy is None:
            self._freeze_policy()
        return self.listeners.add_listener(spec, kind=kind)

    def close_listeners(self) -> None:
        self.listeners.close()

    # -- running ----------------------------------------------------------------
    def run(self, *, stop_signals: bool = True) -> int:
        if self.loop is not None and not self.loop.is_closed() and self.loop.is_running():
            raise ClusterError("run() called while the cluster's loop is running; use 'await serve()'")
        import asyncio
        loop = self.loop if self.loop is not None and not self.loop.is_closed() else asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self.serve(stop_signals=stop_signals))
        finally:
            self.shutdown_loop(loop)

    def shutdown_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Kill what is left, close every listener and the loop (the end of run())."""
        for worker in list(self.workers.values()):
            worker._send_signal(_signal.SIGKILL)
        self.close_listeners()
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self.loop = self.listeners.loop = None


    async def serve(self, *, stop_signals: bool = True) -> int:
        import asyncio
        loop = asyncio.get_running_loop()
        self.attach(loop)
        self._done = loop.create_future()
        loop.call_soon(self._check_done)
        with stop_signals_handled(loop, self._stop_requested, enabled=stop_signals):
            try:
                return await self._done
            finally:
                self._done = None

    def _stop_requested(self, signum: int) -> None:
        if self._stopping:
            for worker in list(self.workers.values()):
                worker._send_signal(_signal.SIGKILL)
            return
        self._stopping = True
        self.disconnect()



# -- the internal-message table -------------------------------------------------

def _online(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    if worker.state == WorkerState.NONE:
        worker.state = WorkerState.ONLINE
    worker.emit("online")
    engine.emit("online", worker)


def _query(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any], fds: list[int]) -> None:
    reply, out = engine.listeners.answer_query(worker, msg, fds)
    if worker._channel is not None:
        worker._channel.reply(msg, reply, out)


def _listening(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    key = msg.get("key")
    engine.listeners.activate(worker, key)
    if isinstance(key, str):
        worker.listening_keys.add(key)
    if worker.state in (WorkerState.NONE, WorkerState.ONLINE):
        worker.state = WorkerState.LISTENING
    address = Address.from_dict(msg.get("address") or {})
    worker.emit("listening", address)
    engine.emit("listening", worker, address)


def _close(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    key = msg.get("key")
    if isinstance(key, str) and key in worker.handle_keys:
        engine.listeners.release(worker, key)


def _exited_after_disconnect(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    worker.exited_after_disconnect = True
    engine.listeners.release_all(worker)
    if worker._channel is not None:
        worker._channel.reply(msg)


def _heartbeat(engine: Engine, worker: PrimaryWorker, msg: dict[str, Any]) -> None:
    if engine.loop is not None:
        worker.last_heartbeat = engine.loop.time()


# act -> what the primary does with that internal message from a worker
# ("query", the only one that may carry a descriptor, is _query, called apart).
ACTS: dict[str, Callable[[Engine, PrimaryWorker, dict[str, Any]], None]] = {
    HEARTBEAT: _heartbeat,
    ONLINE: _online,
    LISTENING: _listening,
    CLOSE: _close,
    EXITED_AFTER_DISCONNECT: _exited_after_disconnect,
}
