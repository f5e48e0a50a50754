"""The worker side: bootstrap, the channel thread and ``cluster.worker``.

A worker is a fresh interpreter re-running the primary's program with
``PYCLUSTER_WORKER_ID`` set. Importing pycluster there calls :func:`boot`:

1. read and remove pycluster's variables from the environment;
2. arm PR_SET_PDEATHSIG (after any uid change, which happened in the child
   before exec) and re-check the parent, so a SIGKILLed primary takes its
   workers with it;
3. install the default SIGTERM handler (``SystemExit(0)``), ignore SIGINT
   (Ctrl-C reaches the whole process group; the primary coordinates the
   stop) and enable faulthandler;
4. start the channel thread (a small event loop of its own, ``_loop``: the
   main thread belongs to the app, which may block in ``serve_forever()``), tell the
   primary we are online, and install bind interception (``net``).

Handlers registered on ``cluster.worker`` run on the channel thread. An
exception escaping one ends the worker (exit 1; SystemExit: its code), as an
uncaught exception ends a Node worker.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core.common import (
    ENV_CHANNEL_FD,
    ENV_INSPECT_PORT,
    ENV_PPID,
    ENV_STDIO,
    ENV_WORKER_ID,
    handle_fds,
    signal_number,
    wrap_received_fd,
)
from ..core.worker import Worker, WorkerState
from ..errors import WORKER_BOOT_ERROR, ChannelClosedError
from ..ipc.channel import KIND_INTERNAL, KIND_USER, Channel
from .loop import MiniLoop

_MAX_QUEUED = 10_000
_DISCONNECT_STOP_TIMEOUT = 2.0
_RESIGNAL_AFTER = 0.5


def _sigterm(signum: int, frame: Any) -> None:
    global _exiting_explicitly
    if _state.main_waiting:
        return  # the main program is over and the process is leaving with 0 anyway
    _exiting_explicitly = True
    raise SystemExit(_state.exit_code)


class _State:
    exit_code = 0
    main_waiting = False
    lock = threading.Lock()
    signalled = threading.Event()  # the post-disconnect signal was sent


_state = _State()


def hard_exit(code: int) -> None:
    """Leave now, with stdio flushed (the channel thread cannot raise into main)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


class ChildWorker(Worker):
    """``cluster.worker`` inside a worker process."""

    def __init__(self, id: int, sock: socket.socket):
        self._loop = MiniLoop()
        super().__init__(id, WorkerState.ONLINE, loop_getter=lambda: self._loop,
                         on_error=self._handler_failed)
        self._queued: deque[tuple[Any, Any]] = deque()
        self._disconnecting = False
        self._closed = threading.Event()
        self._channel = Channel(sock, self._loop, on_message=self._on_message,
                                on_close=self._on_close, on_error=self._channel_error)
        self._thread = threading.Thread(target=self._run, name="pycluster-channel", daemon=True)
        self._thread_id: int | None = None
        self._expected_close = False
        self._after_disconnect: int | None = None

    # -- public API -------------------------------------------------------
    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def process(self) -> Any:
        if self._process is None:
            from ..core.stats import process_for
            self._process = process_for(os.getpid())
        return self._process

    def is_connected(self) -> bool:
        return not self._channel.closed and not self._disconnecting

    def is_dead(self) -> bool:
        return False

    def send(self, message: Any, handle: Any = None,
             callback: Callable[[BaseException | None], None] | None = None) -> bool:
        """Send a JSON message (and optionally a socket or fd) to the primary."""
        return self._channel.send(KIND_USER, message, handle_fds(handle), callback)

    def disconnect(self) -> ChildWorker:
        """Leave the cluster: close shared servers, then the channel, then exit 0."""
        self._loop.call_soon_threadsafe(self._begin_disconnect, int(signal.SIGTERM))
        return self

    def kill(self, signal: int | str = "SIGTERM") -> None:
        """Tell the primary this exit is voluntary, disconnect, then signal ourselves."""
        signum = signal_number(signal)
        self._loop.call_soon_threadsafe(self._begin_disconnect, signum)

    destroy = kill

    # -- the channel thread -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        self._channel.attach(self._loop)
        self._loop.run_forever()

    def on_channel_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def _handler_failed(self, exc: BaseException) -> None:
        if isinstance(exc, SystemExit):
            code = exc.code
            hard_exit(code if isinstance(code, int) else (0 if code is None else 1))
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        hard_exit(1)

    def _added(self, event: str) -> None:
        if event == "message" and self._queued:
            self._loop.call_soon_threadsafe(self._flush_queued)

    def _flush_queued(self) -> None:
        while self._queued and self.listener_count("message"):
            msg, handle = self._queued.popleft()
            self.emit("message", msg, handle)

    def _on_message(self, kind: int, obj: Any, fds: list[int]) -> None:
        if kind == KIND_USER:
            handle = wrap_received_fd(fds[0]) if fds else None
            for fd in fds[1:]:
                os.close(fd)
            if self.listener_count("message"):
                self.emit("message", obj, handle)
            elif len(self._queued) < _MAX_QUEUED:
                # No listener yet (the app registers it after import): keep it.
                self._queued.append((obj, handle))
            return
        for fd in fds:
            os.close(fd)
        act = obj.get("act") if isinstance(obj, dict) else None
        if act == "disconnect":
            self._expected_close = True
            self._after_disconnect = int(signal.SIGTERM) if obj.get("signal", True) else None
            self._finish_disconnect()

    def _channel_error(self, exc: BaseException) -> None:
        if self.listener_count("error"):
            self.emit("error", exc)
        else:
            print(f"pycluster: worker {self.id}: IPC error: {exc}", file=sys.stderr)

    def _begin_disconnect(self, signum: int) -> None:
        if self._disconnecting or self._channel.closed:
            return
        self._disconnecting = True
        self._expected_close = True
        self._after_disconnect = signum

        def acknowledged(_reply: Any, _fds: list, _err: BaseException | None) -> None:
            self._finish_disconnect()

        self._channel.request({"act": "exited_after_disconnect"}, on_reply=acknowledged, timeout=5.0)

    def _finish_disconnect(self) -> None:
        """Stop accepting, let the app hear 'disconnect', close the channel,
        then SIGTERM ourselves (the app's own handler, or SystemExit(0))."""
        from . import intercept as net
        self._disconnecting = True
        net.stop_accepting(timeout=_DISCONNECT_STOP_TIMEOUT)
        self.exited_after_disconnect = True
        self._channel.close()

    def _on_close(self) -> None:
        self.state = WorkerState.DISCONNECTED
        self._disconnecting = True
        self.emit("disconnect")
        self._closed.set()
        if not self._expected_close:
            # The primary is gone (or closed the channel raw): never outlive it.
            hard_exit(0)
        with _state.lock:
            if _state.main_waiting:
                return  # the main program is done and waiting for us: it exits 0
            signum = self._after_disconnect
        if signum is not None:
            signal_main_thread(signum)
            if signum == signal.SIGTERM:
                self._loop.call_later(_RESIGNAL_AFTER, self._resignal)
        _state.signalled.set()

    def _resignal(self) -> None:
        """Our default SIGTERM handler has not run yet: the signal can be lost
        if it lands as the main thread enters epoll_wait (observed about once
        in a few hundred disconnects under load). Send it again; only while
        pycluster's own handler is installed, so an app's handler never sees
        a second SIGTERM from us."""
        if _exiting_explicitly or signal.getsignal(signal.SIGTERM) is not _sigterm:
            return
        signal_main_thread(signal.SIGTERM)
        self._loop.call_later(_RESIGNAL_AFTER, self._resignal)


def signal_main_thread(signum: int) -> None:
    """Deliver a signal to the main thread itself. A process-directed signal
    may be taken by this (channel) thread, and then a main thread blocked in
    epoll_wait would not wake to run the Python handler."""
    try:
        signal.pthread_kill(threading.main_thread().ident, signum)
    except (ProcessLookupError, OSError):
        os.kill(os.getpid(), signum)


def _arm_parent_death(ppid: int) -> None:
    """SIGKILL when the primary dies (cleared by a uid change, so armed now,
    after exec), then re-check: the primary may already be gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if ppid and os.getppid() != ppid:
        hard_exit(0)


def _remap_stdio(spec: str, channel_fd: int) -> int:
    """Put the extra stdio descriptors at the numbers the primary asked for."""
    pairs = [tuple(int(x) for x in item.split(":")) for item in spec.split(",") if item]
    targets = {t for t, _ in pairs}
    if channel_fd in targets:
        channel_fd = _dup_above(channel_fd, max(targets) + 1)
    moved = {}
    for target, src in pairs:
        src = moved.get(src, src)
        if src in targets and src != target:
            moved[src] = _dup_above(src, max(targets) + 1)
            src = moved[src]
    for target, src in pairs:
        src = moved.get(src, src)
        if src != target:
            os.dup2(src, target, inheritable=True)
            os.close(src)
    return channel_fd


def _dup_above(fd: int, low: int) -> int:
    import fcntl
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return new


def _wait_for_disconnect() -> None:
    """threading's exit hook: when the main program ends while still
    connected, the worker stays in the cluster until it is disconnected
    (Node keeps a connected worker alive)."""
    worker = _worker
    if worker is None:
        return
    if getattr(sys, "last_value", None) is not None or _exiting_explicitly:
        return
    with _state.lock:
        if worker._closed.is_set():
            return
        _state.main_waiting = True
    worker._closed.wait()
    # We exit normally now; a SIGTERM the primary sends after the disconnect
    # (kill()) must not turn that into "killed by SIGTERM" during teardown.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_worker: ChildWorker | None = None
_exiting_explicitly = False


def _wrap_exit() -> None:
    """sys.exit() in the main program means leave now, not wait for a disconnect."""
    original = sys.exit

    def exit(code: Any = None) -> None:
        global _exiting_explicitly
        if threading.current_thread() is threading.main_thread():
            _exiting_explicitly = True
        original(code)

    exit.__doc__ = original.__doc__
    sys.exit = exit

    previous_hook = sys.excepthook

    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        global _exiting_explicitly
        _exiting_explicitly = True
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook


def boot() -> ChildWorker:
    """Turn this process into worker N (called once, when pycluster is imported)."""
    global _worker
    env = os.environ
    worker_id = int(env.pop(ENV_WORKER_ID))
    try:
        channel_fd = int(env.pop(ENV_CHANNEL_FD))
    except (KeyError, ValueError):
        print("pycluster: worker started without its channel (PYCLUSTER_CHANNEL_FD)", file=sys.stderr)
        hard_exit(WORKER_BOOT_ERROR)
    ppid = int(env.pop(ENV_PPID, "0") or 0)
    stdio = env.pop(ENV_STDIO, "")
    inspect_port = env.pop(ENV_INSPECT_PORT, None)
    heartbeat = env.pop("PYCLUSTER_HEARTBEAT", None)
    defer_online = env.pop("PYCLUSTER_ONLINE", "") == "after-load"
    _arm_parent_death(ppid)
    if stdio:
        channel_fd = _remap_stdio(stdio, channel_fd)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)
    if signal.getsignal(signal.SIGINT) == signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not faulthandler.is_enabled():
        faulthandler.enable()
    try:
        sock = socket.socket(fileno=channel_fd)
    except OSError as exc:
        print(f"pycluster: worker {worker_id}: bad channel fd {channel_fd}: {exc}", file=sys.stderr)
        hard_exit(WORKER_BOOT_ERROR)
    sock.set_inheritable(False)
    worker = ChildWorker(worker_id, sock)
    _worker = worker
    from . import intercept as net
    net.install(worker)
    worker.start()
    if not defer_online:
        announce_online()
    if heartbeat:
        from . import heartbeat as _heartbeat
        _heartbeat.install_main_probe()
        _heartbeat.start(worker, float(heartbeat))
    _wrap_exit()
    threading._register_atexit(_wait_for_disconnect)  # type: ignore[attr-defined]
    if inspect_port is not None:
        _start_debugger(worker_id, int(inspect_port))
    return worker


def _start_debugger(worker_id: int, port: int) -> None:
    try:
        import debugpy  # type: ignore[import-not-found]
    except ImportError:
        print(f"pycluster: worker {worker_id}: inspect_port={port} needs debugpy"
              " (pip install debugpy); continuing without a debugger", file=sys.stderr)
        return
    debugpy.listen(("127.0.0.1", port))


def leaving() -> None:
    """The main program is ending on purpose: do not wait for a disconnect."""
    global _exiting_explicitly
    _exiting_explicitly = True


def announce_online() -> None:
    """Tell the primary this worker is up (pycluster run: once the app loaded)."""
    worker = _worker
    if worker is not None and not getattr(worker, "_announced", False):
        worker._announced = True
        worker._channel.send(KIND_INTERNAL, {"act": "online"})


def current() -> ChildWorker | None:
    return _worker


__all__ = ["ChildWorker", "boot", "current", "ChannelClosedError"]
