"""The primary side of the cluster: forking, bookkeeping and shared listeners.

One :class:`Engine` per process. It runs on an asyncio loop: child exits
arrive through pidfds (no SIGCHLD, no signal ever sent to a recycled pid),
each worker's IPC channel is a reader on the same loop, and every internal
message is dispatched through a table. Nothing here sends a signal from a
signal handler or mutates state from another thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal as _signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..core import sockets as _sockets
from ..core.worker import Address, Worker, WorkerState
from ..errors import ClusterError, SettingsError
from ..ipc.channel import KIND_INTERNAL, KIND_USER, Channel, socketpair
from .handles import ReusePortHandle, RoundRobinHandle, SharedHandle

if TYPE_CHECKING:  # imported when the loop starts, not before the first fork
    import asyncio

from ..core.common import (
    ENV_CHANNEL_FD,
    ENV_INSPECT_PORT,
    ENV_PPID,
    ENV_STDIO,
    ENV_WORKER_ID,
    POLICY_NAMES,
    SCHED_NONE,
    SCHED_REUSEPORT,
    SCHED_RR,
    handle_fds,
    signal_number,
    wrap_received_fd,
)

# A primary-side kill() disconnects first; a worker whose channel thread
# cannot answer (a C loop holding the GIL) is signalled after this anyway.
KILL_DISCONNECT_TIMEOUT = 5.0

SETTING_KEYS = ("exec", "args", "exec_argv", "silent", "stdio", "uid", "gid", "cwd",
                "inspect_port", "serialization")


def _default_settings() -> dict[str, Any]:
    """Node's defaults, read at call time (test-cluster-setup-primary-argv)."""
    main = sys.argv[0] if sys.argv else ""
    exec_path = os.path.abspath(main) if main and main not in ("-c", "-") else None
    return {
        "args": list(sys.argv[1:]),
        "exec": exec_path,
        "exec_argv": _interpreter_options(),
        "silent": False,
    }


def _interpreter_options() -> list[str]:
    """The interpreter options exactly as given (Node's execArgv): what stands
    in sys.orig_argv between the interpreter and the script (or -m/-c)."""
    orig = list(getattr(sys, "orig_argv", []))
    if len(orig) <= len(sys.argv):
        return []
    opts = orig[1:len(orig) - len(sys.argv)]
    # With -m/-c, sys.argv[0] replaced the module name / command: drop the switch.
    if opts and opts[-1] in ("-m", "-c"):
        opts = opts[:-1]
    elif opts and (opts[-1].startswith("-m") or opts[-1].startswith("-c")) and len(opts[-1]) > 2 \
            and not opts[-1].startswith("--"):
        opts = opts[:-1]
    return opts


def _validate_settings(options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in SETTING_KEYS:
            raise SettingsError(f"unknown setting {key!r}; known settings: {', '.join(SETTING_KEYS)}")
        if key in ("args", "exec_argv"):
            if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
                raise SettingsError(f"setting {key!r} must be a list of strings, not {value!r}")
        elif key in ("exec", "cwd") and value is not None and not isinstance(value, (str, os.PathLike)):
            raise SettingsError(f"setting {key!r} must be a path, not {value!r}")
        elif key == "silent" and not isinstance(value, bool):
            raise SettingsError(f"setting 'silent' must be True or False, not {value!r}")
        elif key in ("uid", "gid") and value is not None and not isinstance(value, (int, str)):
            raise SettingsError(f"setting {key!r} must be a number or a name, not {value!r}")
        elif key == "serialization" and value != "json":
            raise SettingsError(f"setting 'serialization' must be 'json' (pycluster never unpickles"
                                f" what a worker sends), not {value!r}")
        elif key == "stdio":
            if not isinstance(value, (list, tuple)):
                raise SettingsError(f"setting 'stdio' must be a list, not {value!r}")
            for entry in value:
                if not (entry in ("pipe", "inherit", "ignore", "ipc", None) or
                        (isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0)):
                    raise SettingsError(f"bad stdio entry {entry!r}: use 'pipe', 'inherit',"
                                        " 'ignore', 'ipc', None or a file descriptor")
        elif key == "inspect_port":
            _check_port(value)


def _check_port(value: Any) -> None:
    if callable(value) or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SettingsError(f"inspect_port must be a port number 0-65535 or a function, not {value!r}")


def decode_waitid(res: Any) -> tuple[int | None, str | None]:
    """(code, signal name) from an os.waitid result."""
    if res.si_code == os.CLD_EXITED:
        return res.si_status, None
    try:
        return None, _signal.Signals(res.si_status).name
    except ValueError:
        return None, f"SIG{res.si_status}"


class PrimaryWorker(Worker):
    """A worker as the primary sees it."""

    def __init__(self, engine: Engine, id: int):
        super().__init__(id, loop_getter=lambda: engine.loop, on_error=engine._handler_failed)
        self._engine = engine
        self._popen: subprocess.Popen | None = None
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._channel: Channel | None = None
        self._handles: set[str] = set()
        self._disconnected = False
        self._exited = False
        self._disconnecting = False
        self._kill_signal: int | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self.exit_code: int | None = None
        self.signal_code: str | None = None
        self.stdout = None
        self.stderr = None
        self.stdio: list[Any] = []
        self.listening_keys: set[str] = set()
        self.last_heartbeat: float | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def process(self) -> Any:
        if self._process is None and self._pid is not None:
            from ..core.stats import process_for
            self._process = process_for(self._pid)
        return self._process

    def is_connected(self) -> bool:
        return self._channel is not None and not self._channel.closed and not self._disconnected

    def send(self, message: Any, handle: Any = None,
             callback: Callable[[BaseException | None], None] | None = None) -> bool:
        """Send a JSON message (and optionally a socket or fd) to the worker."""
        fds = handle_fds(handle)
        ch = self._channel
        if ch is None or ch.closed or self._disconnected:
            from ..errors import ChannelClosedError
            err = ChannelClosedError(f"worker {self.id}'s IPC channel is closed")
            if callback is not None:
                self._engine.call_soon(callback, err)
            return False
        return ch.send(KIND_USER, message, fds, callback)

    def disconnect(self) -> PrimaryWorker:
        """Stop routing to the worker, tell it to close its servers and leave."""
        self.exited_after_disconnect = True
        self._engine._disconnect_worker(self)
        return self

    def kill(self, signal: int | str = "SIGTERM") -> None:
        """Disconnect, then signal the worker (a voluntary exit: not replaced)."""
        signum = signal_number(signal)
        self.exited_after_disconnect = True
        if self.is_connected():
            self._kill_signal = signum
            self._engine._disconnect_worker(self)
            loop = self._engine.loop
            if loop is not None and self._kill_timer is None:
                self._kill_timer = loop.call_later(KILL_DISCONNECT_TIMEOUT, self._send_signal, signum)
        else:
            self._send_signal(signum)

    destroy = kill

    def signal(self, signal: int | str) -> bool:
        """Send a signal through the pidfd (never to a recycled pid)."""
        return self._send_signal(signal_number(signal))

    def _send_signal(self, signum: int) -> bool:
        if self._exited or self._pidfd is None:
            return False
        try:
            _signal.pidfd_send_signal(self._pidfd, signum)
            return True
        except ProcessLookupError:
            return False


def _window(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65536:
        raise ValueError
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise ValueError
    return value


# name: (parse, default, what a value must be)
_TUNING: dict[str, tuple[Callable[[str], Any], Any, str]] = {
    "PYCLUSTER_RR_WINDOW": (_window, 64, "a whole number of hand-offs in flight per worker, 1 to 65536"),
    "PYCLUSTER_HANDOFF_TIMEOUT": (_seconds, 5.0, "a number of seconds above 0 (at most 86400)"),
}


def _env_tuning(name: str) -> Any:
    """A tuning variable's value (its default when unset or empty); SettingsError naming it when bad."""
    parse, default, what = _TUNING[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"environment {name}={raw[:40]!r}: expected {what} (default {default:g})") from None


class Engine:
    """The cluster primary (one per process)."""

    def __init__(self, facade: Any):
        self._facade = facade  # the pycluster module: its `emit` and `scheduling_policy`
        self.settings: dict[str, Any] = {}
        self.workers: dict[int, PrimaryWorker] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.policy: int | None = None
        self._next_id = 1
        self._handles: dict[str, Any] = {}
        self.master_listeners: list[Any] = []
        self._before_loop: list[tuple[Callable, tuple]] = []
        self._done: asyncio.Future | None = None
        self._disconnect_callbacks: list[Callable[[], Any]] = []
        self._stopping = False  # a stop signal arrived (run()/serve()); a second one kills
        # RR tuning: PYCLUSTER_RR_WINDOW / PYCLUSTER_HANDOFF_TIMEOUT are read (and
        # checked) when the policy is frozen, not at import: `pycluster status`
        # must not die of a bad value it never uses.
        self.handoff_window = _TUNING["PYCLUSTER_RR_WINDOW"][1]
        self.handoff_timeout = _TUNING["PYCLUSTER_HANDOFF_TIMEOUT"][1]
        # The CLI master runs workers as `python -m pycluster.child.entry ...`
        # instead of re-running the main script (settings exec/args).
        self.worker_command: list[str] | None = None
        # Starts a worker process: subprocess.Popen, or a --preload fork server's launch().
        self.launcher: Callable[..., Any] | None = None

    # -- the loop -------------------------------------------------------------
    def call_soon(self, fn: Callable, *args: Any) -> None:
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
        for handle in set(self._handles.values()):
            if hasattr(handle, "loop"):
                handle.loop = loop  # listeners bound before the loop existed (--bind)
        for worker in list(self.workers.values()):
            self._attach_worker(worker)
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

    def _handler_failed(self, exc: BaseException) -> None:
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
        _validate_settings(options)
        merged = {**_default_settings(), **self.settings, **options}
        self.settings = merged
        self._facade._set_settings(merged)
        if self.policy is None:
            self._freeze_policy()
        self.call_soon(self.emit, "setup", merged)
        return merged

    def _freeze_policy(self) -> None:
        policy = getattr(self._facade, "scheduling_policy", SCHED_RR)
        if policy not in POLICY_NAMES:
            raise SettingsError(f"scheduling_policy must be SCHED_RR, SCHED_NONE or SCHED_REUSEPORT,"
                                f" not {policy!r}")
        self.handoff_window = _env_tuning("PYCLUSTER_RR_WINDOW")
        self.handoff_timeout = _env_tuning("PYCLUSTER_HANDOFF_TIMEOUT")
        self.policy = policy

    # -- fork -----------------------------------------------------------------
    def fork(self, env: dict[str, Any] | None = None) -> PrimaryWorker:
        plan = self._plan_fork(env)
        return self._started(plan, self._launch(plan, self.launcher or subprocess.Popen))

    async def fork_async(self, env: dict[str, Any] | None, launcher: Callable[..., Any]) -> PrimaryWorker:
        """fork() through an asynchronous launcher (a --preload fork server):
        ``launcher(argv, **popen_kwargs)`` sends its request at once (the
        descriptors travel with it) and returns an awaitable for the process.
        The worker exists (in ``workers``, "fork" emitted) only once its pid is
        known, so nothing ever sees a worker without a process; the loop
        serves meanwhile."""
        plan = self._plan_fork(env)
        pending = self._launch(plan, launcher)
        try:
            popen = await pending
        except BaseException:
            parent_end = plan[3]
            parent_end.close()  # the request failed or was given up: a late worker finds its channel closed
            raise
        return self._started(plan, popen)

    def _plan_fork(self, env: dict[str, Any] | None) -> tuple:
        self.setup_primary()
        settings = self.settings
        worker = PrimaryWorker(self, self._next_id)
        self._next_id += 1
        argv = self._worker_argv(settings)
        child_env = dict(os.environ)
        if env:
            child_env.update({str(k): str(v) for k, v in env.items()})
        parent_end, child_end = socketpair()
        pass_fds = [child_end.fileno()]
        child_env[ENV_WORKER_ID] = str(worker.id)
        child_env[ENV_CHANNEL_FD] = str(child_end.fileno())
        child_env[ENV_PPID] = str(os.getpid())
        port = self._inspect_port(settings, worker.id)
        if port is not None:
            child_env[ENV_INSPECT_PORT] = str(port)
        stdin, stdout, stderr, extra = self._stdio(settings)
        remap = []
        for target, theirs, _mine in extra:
            if theirs is not None:
                pass_fds.append(theirs)
                remap.append(f"{target}:{theirs}")
        if remap:
            child_env[ENV_STDIO] = ",".join(remap)
        kwargs: dict[str, Any] = {"env": child_env, "pass_fds": pass_fds, "close_fds": True,
                                  "stdin": stdin, "stdout": stdout, "stderr": stderr}
        if settings.get("cwd") is not None:
            kwargs["cwd"] = os.fspath(settings["cwd"])
        kwargs.update(_credentials(settings.get("uid"), settings.get("gid")))
        return worker, argv, kwargs, parent_end, child_end, extra

    def _launch(self, plan: tuple, launcher: Callable[..., Any]) -> Any:
        worker, argv, kwargs, parent_end, child_end, extra = plan
        settings = self.settings
        try:
            return launcher(argv, **kwargs)
        except PermissionError as exc:
            parent_end.close()
            raise exec_refused(exc, f"worker {worker.id}", argv[0], settings.get("uid"), settings.get("gid"),
                               switching="user" in kwargs or "group" in kwargs) from None
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
            for _target, theirs, _mine in extra:
                if theirs is not None:
                    os.close(theirs)

    def _started(self, plan: tuple, popen: Any) -> PrimaryWorker:
        worker, _argv, _kwargs, parent_end, _child_end, extra = plan
        try:
            worker._pidfd = os.pidfd_open(popen.pid)
        except OSError:
            parent_end.close()  # gone (and reaped as an orphan) before we could watch it
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
            raise
        worker._popen = popen
        worker._pid = popen.pid
        worker.stdout, worker.stderr = popen.stdout, popen.stderr
        worker.stdio = [popen.stdin, popen.stdout, popen.stderr] + [m for _t, _th, m in extra]
        worker._channel = Channel(parent_end, None, on_message=lambda k, o, f: self._on_message(worker, k, o, f),
                                  on_close=lambda: self._on_channel_close(worker),
                                  on_error=lambda exc: self._on_channel_error(worker, exc))
        self.workers[worker.id] = worker
        if self._current_loop() is not None:
            self._attach_worker(worker)
        self.call_soon(self.emit, "fork", worker)
        return worker

    def _worker_argv(self, settings: dict[str, Any]) -> list[str]:
        if self.worker_command is not None:
            return [sys.executable, *settings.get("exec_argv", []), *self.worker_command]
        exec_path = settings.get("exec")
        if not exec_path:
            raise ClusterError("cannot start a worker: there is no main script to re-run"
                               " (interactive or -c); set it with setup_primary(exec=...)")
        exec_path = os.fspath(exec_path)
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        main_file = getattr(main, "__file__", None)
        target = [os.path.abspath(exec_path)]
        if spec is not None and main_file and os.path.abspath(main_file) == target[0]:
            target = ["-m", spec.name]  # the primary ran with -m: so does the worker
        return [sys.executable, *settings.get("exec_argv", []), *target, *settings.get("args", [])]

    @staticmethod
    def _inspect_port(settings: dict[str, Any], worker_id: int) -> int | None:
        value = settings.get("inspect_port")
        if value is None:
            return None
        if callable(value):
            value = value()
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise SettingsError(f"inspect_port function returned {value!r}, not a port 0-65535")
        return value

    def _stdio(self, settings: dict[str, Any]):
        silent = settings.get("silent", False)
        spec = settings.get("stdio")
        if spec is None:
            spec = ["pipe", "pipe", "pipe"] if silent else ["inherit", "inherit", "inherit"]
        spec = list(spec) + ["inherit"] * (3 - len(spec))
        mapping = {"pipe": subprocess.PIPE, "inherit": None, "ignore": subprocess.DEVNULL, None: None}

        def std(entry: Any) -> Any:
            if isinstance(entry, int):
                return entry
            return mapping.get(entry)

        stdin, stdout, stderr = (std(e) for e in spec[:3])
        extra = []
        for index, entry in enumerate(spec[3:], start=3):
            if entry == "pipe":
                mine, theirs = socket.socketpair()
                extra.append((index, os.dup(theirs.fileno()), mine))
                theirs.close()
            elif isinstance(entry, int):
                extra.append((index, os.dup(entry), None))
            else:
                extra.append((index, None, None))
        return stdin, stdout, stderr, extra

    def _attach_worker(self, worker: PrimaryWorker) -> None:
        loop = self.loop
        assert loop is not None
        worker._channel.attach(loop)
        if worker._pidfd is not None and not worker._exited:
            loop.add_reader(worker._pidfd, self._reap, worker)

    # -- exits and disconnects -----------------------------------------------
    def _reap(self, worker: PrimaryWorker) -> None:
        try:
            res = os.waitid(os.P_PIDFD, worker._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            res = None
            code, sig = None, None
        else:
            if res is None or res.si_pid == 0:
                return  # not yet (spurious wake-up)
            code, sig = decode_waitid(res)
        self.loop.remove_reader(worker._pidfd)
        os.close(worker._pidfd)
        worker._pidfd = None
        if worker._kill_timer is not None:
            worker._kill_timer.cancel()
        if worker._popen is not None:
            # We reaped it: keep subprocess from ever waiting on that pid.
            worker._popen.returncode = code if code is not None else -signal_number(sig or 15)
            stdin = worker._popen.stdin  # our end of its stdin pipe: nobody reads it any more
            if stdin is not None:
                try:
                    stdin.close()
                except OSError:
                    pass
        # The worker's last words are in the socket: deliver them, then EOF.
        if worker._channel is not None and not worker._channel.closed:
            worker._channel.drain()
            worker._channel.close()
        worker._exited = True
        worker.exit_code, worker.signal_code = code, sig
        worker.state = WorkerState.DEAD
        worker.exited_after_disconnect = bool(worker.exited_after_disconnect)
        if worker._disconnected:
            self._forget(worker)
        worker.emit("exit", code, sig)
        self.emit("exit", worker, code, sig)
        self._check_done()

    def _on_channel_close(self, worker: PrimaryWorker) -> None:
        if worker._disconnected:
            return
        worker._disconnected = True
        self._remove_handles(worker)
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

    def _disconnect_worker(self, worker: PrimaryWorker) -> None:
        if worker._disconnecting or not worker.is_connected():
            return
        worker._disconnecting = True
        self._remove_handles(worker)  # stop routing to it at once
        worker._channel.send(KIND_INTERNAL, {"act": "disconnect",
                                             "signal": worker._kill_signal is None})

    def _remove_handles(self, worker: PrimaryWorker) -> None:
        for key in list(worker._handles):
            self._release(worker, key)

    def _release(self, worker: PrimaryWorker, key: str) -> None:
        worker._handles.discard(key)
        handle = self._handles.get(key)
        if handle is None:
            return
        if handle.remove(worker) and not handle.owned:
            # Node: the primary closes a listener when its last worker leaves.
            del self._handles[key]
            handle.close()

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
                self._handler_failed(exc)
        if self._done is not None and not self._done.done() and not self.workers:
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
        act = obj.get("act") if isinstance(obj, dict) else None
        if act == "query":
            # The only internal message that may carry a descriptor: the
            # socket of a worker's listen(fd=N).
            try:
                self._act_query(worker, obj, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            return
        for fd in fds:
            os.close(fd)
        method = self._ACTS.get(act) if isinstance(act, str) else None
        if method is None:
            self._on_channel_error(worker, ClusterError(f"unknown internal message {act!r} from worker"))
            return
        method(self, worker, obj)

    def _act_online(self, worker: PrimaryWorker, msg: dict) -> None:
        if worker.state == WorkerState.NONE:
            worker.state = WorkerState.ONLINE
        worker.emit("online")
        self.emit("online", worker)

    def _act_query(self, worker: PrimaryWorker, msg: dict, fds: list[int]) -> None:
        try:
            handle = self._handle_for(worker, msg, fds)
            name = getattr(handle, "_unlink", None)
            if name is not None:
                name.relink()
        except Refused as exc:
            worker._channel.reply(msg, {"errno": exc.errno, "message": str(exc), "why": exc.why})
            return
        except OSError as exc:
            worker._channel.reply(msg, {"errno": exc.errno or errno.EINVAL, "message": str(exc)})
            return
        except (ValueError, TypeError, KeyError, ClusterError) as exc:
            worker._channel.reply(msg, {"errno": errno.EINVAL, "message": str(exc)})
            return
        reply, fds = handle.add(worker)
        worker._handles.add(handle.key)
        reply["key"] = handle.key
        reply["address"] = handle.address.to_dict()
        reply["masters"] = len(self.master_listeners)
        worker._channel.reply(msg, reply, fds)

    def _act_listening(self, worker: PrimaryWorker, msg: dict) -> None:
        handle = self._handles.get(msg.get("key"))
        if handle is not None and worker.id in _members(handle):
            handle.activate(worker)
        if isinstance(msg.get("key"), str):
            worker.listening_keys.add(msg["key"])
        if worker.state in (WorkerState.NONE, WorkerState.ONLINE):
            worker.state = WorkerState.LISTENING
        address = Address.from_dict(msg.get("address") or {})
        worker.emit("listening", address)
        self.emit("listening", worker, address)

    def _act_close(self, worker: PrimaryWorker, msg: dict) -> None:
        key = msg.get("key")
        if isinstance(key, str) and key in worker._handles:
            self._release(worker, key)

    def _act_exited_after_disconnect(self, worker: PrimaryWorker, msg: dict) -> None:
        worker.exited_after_disconnect = True
        self._remove_handles(worker)
        worker._channel.reply(msg)

    def _act_heartbeat(self, worker: PrimaryWorker, msg: dict) -> None:
        worker.last_heartbeat = self.loop.time()

    _ACTS: dict[str, Callable[[Engine, PrimaryWorker, dict], None]] = {
        "heartbeat": _act_heartbeat,
        "online": _act_online,
        "listening": _act_listening,
        "close": _act_close,
        "exited_after_disconnect": _act_exited_after_disconnect,
    }

    # -- listeners ------------------------------------------------------------
    def _handle_for(self, worker: PrimaryWorker, msg: dict, fds: list[int]) -> Any:
        """The handle a worker's query asks for. A worker is untrusted: it
        gets the primary's listeners, a socket it sent itself, or a new
        address bound for it only when it has the primary's own privileges."""
        master = msg.get("master")
        if master is not None:
            if not isinstance(master, int) or not 0 <= master < len(self.master_listeners):
                raise ClusterError(f"the primary has no listener #{master}"
                                   f" ({len(self.master_listeners)} configured)")
            return self.master_listeners[master]
        if msg.get("fd") is not None:
            return self._worker_socket_handle(msg, fds)
        key = handle_key(msg)
        handle = self._handles.get(key)
        if handle is None:
            _check_may_bind(worker, msg)
            handle = self._create_handle(key, msg, owned=False)
            self._handles[key] = handle
        return handle

    def _worker_socket_handle(self, msg: dict, fds: list[int]) -> Any:
        """``listen(fd=N)`` in a worker: N is the worker's own descriptor,
        sent with the query (never a number looked up in our fd table). The
        worker keeps the same open file, so it could make it blocking under
        us: the primary never accepts on it, whatever the policy; workers
        accept on it directly (SCHED_NONE), and workers sending the same
        socket share one handle."""
        fd = msg["fd"]
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise ValueError(f"bad fd {fd!r}")
        if len(fds) != 1:
            raise OSError(errno.EBADF, f"fd {fd} did not come with the request")
        st = os.fstat(fds[0])
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ENOTSOCK, f"fd {fd} is not a socket")
        key = f"fd:{st.st_dev}:{st.st_ino}:{msg.get('index', 0)}"
        handle = self._handles.get(key)
        if handle is not None:
            return handle
        sock = socket.socket(fileno=os.dup(fds[0]))
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) or \
                    sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                raise OSError(errno.EINVAL, f"fd {fd} is not a TCP, UDP or unix socket")
            if sock.type == socket.SOCK_STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.listen(_sockets.DEFAULT_BACKLOG)
            described = _sockets.describe(sock, fd)
        except BaseException:
            sock.close()
            raise
        handle = SharedHandle(key, sock, described)
        self._handles[key] = handle
        return handle

    def _create_handle(self, key: str, msg: dict, *, owned: bool) -> Any:
        atype = msg.get("address_type")
        fd = msg.get("fd")
        policy = self.policy if self.policy is not None else SCHED_RR
        sock_fd_origin = None
        name = None
        if fd is not None:  # the primary's own fd (--bind fd://N, socket activation)
            if not owned:
                raise ValueError("a worker's fd is never looked up in the primary")
            if not isinstance(fd, int) or fd < 0:
                raise ValueError(f"bad fd {fd!r}")
            sock = _sockets.socket_from_fd(fd)
            sock_fd_origin = fd
            if sock.type == socket.SOCK_STREAM and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.listen(_sockets.DEFAULT_BACKLOG)
            stream = sock.type == socket.SOCK_STREAM
        else:
            family, sock_type = _family_type(atype)
            stream = sock_type == socket.SOCK_STREAM
            reuse = False
            if family == socket.AF_UNIX:
                path = msg.get("address")
                if not isinstance(path, str) or not path:
                    raise ValueError("unix socket path missing")
                if path.startswith("\0"):
                    address: Any = path
                else:
                    # Bind a private name and hard-link the public one to it,
                    # all through the directory's fd (see UnixName).
                    name = _sockets.UnixName(path)
                    if name.exists():
                        name.remove()
                        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))  # as a plain bind
                    address = name.bind_address()
            else:
                host, port = msg.get("address") or "", msg.get("port") or 0
                if not isinstance(port, int) or not 0 <= port <= 65535:
                    raise ValueError(f"bad port {port!r}")
                address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
                reuse = policy == SCHED_REUSEPORT and stream
            try:
                sock = _sockets.create_listener(family, sock_type, address, v6only=msg.get("v6only"),
                                                reuseport=reuse, listen=not reuse)
                if name is not None:
                    name.bound()
            except BaseException:
                if name is not None:
                    name.remove()
                raise
        described = _sockets.describe(sock, sock_fd_origin)
        if name is not None:
            described = Address(name.path, None, -1, None)  # the path the app asked for
        if not stream:
            return SharedHandle(key, sock, described, owned=owned, unlink=name)
        if policy == SCHED_REUSEPORT and sock.family != socket.AF_UNIX and fd is None:
            return ReusePortHandle(key, sock, described, owned=owned)
        if policy == SCHED_NONE or (policy == SCHED_REUSEPORT):
            return SharedHandle(key, sock, described, owned=owned, unlink=name)
        return RoundRobinHandle(key, sock, described, self.loop, owned=owned, window=self.handoff_window,
                                handoff_timeout=self.handoff_timeout, unlink=name)

    def add_listener(self, spec: Any, *, kind: str | None = None) -> Any:
        """A listener owned by the primary (``--bind``): it outlives its workers,
        and a worker gets it with ``pycluster.listen()`` or by binding its address."""
        if self.policy is None:
            self._freeze_policy()
        parsed = _sockets.parse_address(spec, kind)
        if parsed.kind == "fd":
            msg: dict[str, Any] = {"fd": parsed.fd, "address_type": None}
        elif parsed.kind == "unix":
            msg = {"address": os.path.abspath(parsed.path) if not parsed.path.startswith("\0") else parsed.path,
                   "address_type": -1}
        else:
            family, _ = _sockets.family_for_host(parsed.host, socket.SOCK_DGRAM if parsed.kind == "udp"
                                                 else socket.SOCK_STREAM)
            host = parsed.host or ("0.0.0.0" if family == socket.AF_INET else "::")
            if family == socket.AF_INET and not _is_ip(host):
                host = _sockets.family_for_host(host, socket.SOCK_STREAM)[1][0]
            v6 = family == socket.AF_INET6
            atype = ("udp6" if v6 else "udp4") if parsed.kind == "udp" else (6 if v6 else 4)
            msg = {"address": host, "port": parsed.port, "address_type": atype}
        key = handle_key({**msg, "index": 0})
        handle = self._create_handle(key, msg, owned=True)
        # Register under the resolved address too, so a worker binding the
        # real port (after port 0) shares it.
        real = handle.address
        real_key = handle_key({"address": msg.get("address"), "port": real.port,
                               "address_type": msg.get("address_type"), "fd": msg.get("fd"), "index": 0})
        self._handles[key] = handle
        self._handles[real_key] = handle
        handle.key = real_key
        self.master_listeners.append(handle)
        return handle

    def close_listeners(self) -> None:
        for handle in set(self._handles.values()):
            handle.close()
        self._handles.clear()
        self.master_listeners.clear()

    # -- running ----------------------------------------------------------------
    def run(self, *, stop_signals: bool = True) -> int:
        if self.loop is not None and not self.loop.is_closed() and self.loop.is_running():
            raise ClusterError("run() called while the cluster's loop is running; use 'await serve()'")
        import asyncio
        loop = self.loop if self.loop is not None and not self.loop.is_closed() else asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self.serve(stop_signals=stop_signals))
        finally:
            self._shutdown_loop(loop)

    def _shutdown_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        for worker in list(self.workers.values()):
            worker._send_signal(_signal.SIGKILL)
        self.close_listeners()
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        self.loop = None

    async def serve(self, *, stop_signals: bool = True) -> int:
        import asyncio
        loop = asyncio.get_running_loop()
        self.attach(loop)
        self._done = loop.create_future()
        loop.call_soon(self._check_done)
        with self._stop_signals(loop, stop_signals):
            try:
                return await self._done
            finally:
                self._done = None

    @contextlib.contextmanager
    def _stop_signals(self, loop: asyncio.AbstractEventLoop, enabled: bool):
        """SIGINT/SIGTERM stop the cluster gracefully (a second one kills);
        handlers only record and wake; restored on the way out."""
        import threading
        installed = []
        if enabled and threading.current_thread() is threading.main_thread():
            for signum in (_signal.SIGINT, _signal.SIGTERM):
                previous = _signal.getsignal(signum)
                if previous not in (_signal.SIG_DFL, _signal.default_int_handler):
                    continue  # the app has its own: leave it alone
                loop.add_signal_handler(signum, self._stop_requested, signum)
                installed.append((signum, previous))
        try:
            yield
        finally:
            for signum, previous in installed:
                loop.remove_signal_handler(signum)
                _signal.signal(signum, previous)

    def _stop_requested(self, signum: int) -> None:
        if self._stopping:
            for worker in list(self.workers.values()):
                worker._send_signal(_signal.SIGKILL)
            return
        self._stopping = True
        self.disconnect()


class Refused(OSError):
    """A worker asked the primary for what it may not do itself."""

    def __init__(self, code: int, why: str):
        super().__init__(code, why)
        self.why = why


def _process_credentials(pid: int | str) -> tuple | None:
    """(uids, gids, groups, effective capabilities) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapEff"):
            fields[key] = value.split()
    if len(fields) != 4:
        return None
    return tuple(fields["Uid"]), tuple(fields["Gid"]), frozenset(fields["Groups"]), fields["CapEff"][0]


def _check_may_bind(worker: PrimaryWorker, msg: dict) -> None:
    """Bind a new address for a worker only when it runs with the primary's
    own credentials: otherwise the primary would bind, as root say, a port
    below 1024 or a socket file in a directory the worker cannot write.
    The worker's process is our unreaped child, so its pid is not reused."""
    pid = worker.pid
    theirs = _process_credentials(pid) if pid is not None else None
    if theirs is not None and theirs == _process_credentials("self"):
        return
    what = msg.get("address")
    if msg.get("address_type") != -1:
        what = f"{what}:{msg.get('port')}"
    uid = theirs[0][1] if theirs is not None else "?"
    raise Refused(errno.EACCES,
                  f"pycluster: worker {worker.id} runs with other credentials than the primary"
                  f" (uid {uid}, primary uid {os.geteuid()}): it may share the primary's listeners"
                  f" but not have {what} bound for it; add it to the primary's --bind")


def _members(handle: Any) -> Iterable[int]:
    lanes = getattr(handle, "lanes", None)
    return lanes if lanes is not None else handle.workers



def _is_ip(host: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(host.split("%")[0])
        return True
    except ValueError:
        return False


def handle_key(msg: dict) -> str:
    """Node's handle key: address:port:addressType:fd:index."""
    return "{}:{}:{}:{}:{}".format(msg.get("address"), msg.get("port"), msg.get("address_type"),
                                   msg.get("fd"), msg.get("index", 0))


def _family_type(atype: Any) -> tuple[int, int]:
    table = {4: (socket.AF_INET, socket.SOCK_STREAM), 6: (socket.AF_INET6, socket.SOCK_STREAM),
             -1: (socket.AF_UNIX, socket.SOCK_STREAM), "udp4": (socket.AF_INET, socket.SOCK_DGRAM),
             "udp6": (socket.AF_INET6, socket.SOCK_DGRAM)}
    try:
        return table[atype]
    except (KeyError, TypeError):
        raise ValueError(f"bad address type {atype!r}") from None


def exec_refused(exc: PermissionError, what: str, program: str, uid: Any, gid: Any, *,
                 switching: bool) -> PermissionError:
    """The error for a process we could not start as ``uid``/``gid``, with
    the likely cause (a root master: that user may not execute the
    interpreter; anyone else: only root may switch users)."""
    who = f"user {uid}" if uid is not None else "this user"
    if gid is not None:
        who += f" (group {gid})"
    if os.geteuid() == 0 or not switching:
        hint = (f"{who} cannot execute {exc.filename or program} or search a directory above it;"
                " install pycluster where that user can read it (e.g. a virtualenv outside a"
                " 0700 home directory)")
    else:
        hint = f"this primary runs as uid {os.geteuid()}; only root may switch users"
    return PermissionError(exc.errno, f"cannot start {what} as {who}: {exc.strerror} ({hint})")


def _credentials(uid: Any, gid: Any) -> dict[str, Any]:
    """Popen arguments that drop privileges in the child before exec:
    setgroups (supplementary groups of the target user, never root's),
    then setgid, then setuid."""
    if uid is None and gid is None:
        return {}
    privileged = os.geteuid() == 0
    import grp
    import pwd
    kwargs: dict[str, Any] = {}
    pw = None
    if uid is not None:
        try:
            pw = pwd.getpwnam(uid) if isinstance(uid, str) else pwd.getpwuid(uid)
            kwargs["user"] = pw.pw_uid
        except KeyError:
            if isinstance(uid, str):
                raise SettingsError(f"unknown user {uid!r}") from None
            kwargs["user"] = uid
    if gid is not None:
        try:
            kwargs["group"] = grp.getgrnam(gid).gr_gid if isinstance(gid, str) else gid
        except KeyError:
            raise SettingsError(f"unknown group {gid!r}") from None
    elif pw is not None:
        kwargs["group"] = pw.pw_gid
    elif privileged and "user" in kwargs and kwargs["user"] != os.geteuid():
        # A uid with no passwd entry has no group of its own: the worker
        # would keep ours (root's).
        raise SettingsError(f"user {uid} is not in the user database, so it has no group:"
                            " name one too (--group, or gid)")
    if not privileged:
        # Only root may switch; asking for who we already are is fine (and
        # setgroups would fail without CAP_SETGID), anything else fails in
        # Popen with EPERM, reported by fork().
        if kwargs.get("user") == os.geteuid():
            kwargs.pop("user")
        if kwargs.get("group") == os.getegid():
            kwargs.pop("group")
        return kwargs
    if pw is not None:
        kwargs["extra_groups"] = os.getgrouplist(pw.pw_name, kwargs["group"])
    else:
        kwargs["extra_groups"] = [kwargs["group"]] if "group" in kwargs else []
    return kwargs
