"""``cluster.worker`` inside a worker process, and the channel thread it runs.

Handlers registered on ``cluster.worker`` run on the channel thread (a
:class:`~pycluster.child.loop.MiniLoop` of its own: the main thread belongs
to the app, which may block in ``serve_forever()``). An exception escaping
one ends the worker (exit 1; SystemExit: its code), as an uncaught exception
ends a Node worker.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..core.common import handle_fds, signal_number, wrap_received_fd
from ..core.worker import Worker, WorkerState
from ..ipc.channel import KIND_USER, Channel
from ..ipc.messages import ACT, DISCONNECT, EXITED_AFTER_DISCONNECT
from .inflight import DRAIN_POLL
from .loop import MiniLoop
from .process import ExitState, hard_exit, signal_main_thread

if TYPE_CHECKING:
    import asyncio

_MAX_QUEUED = 10_000
_DISCONNECT_STOP_TIMEOUT = 2.0
_RESIGNAL_AFTER = 0.5


class ChildWorker(Worker):
    """``cluster.worker`` inside a worker process.

    ``stop_accepting(timeout)`` stops every shared listener of this worker
    (the runtime's registry): called when the primary disconnects us.
    """

    def __init__(self, id: int, sock: socket.socket, loop: MiniLoop, exits: ExitState,
                 stop_accepting: Callable[[float], None]):
        self._loop = loop
        super().__init__(id, WorkerState.ONLINE, loop_getter=self._event_loop,
                         on_error=self._handler_failed)
        self._exits = exits
        self._stop_accepting = stop_accepting
        self._queued: deque[tuple[Any, Any]] = deque()
        self._disconnecting = False
        self.closed = threading.Event()  # the channel is closed (set on the channel thread)
        self._channel = Channel(sock, self._event_loop(), on_message=self._on_message,
                                on_close=self._on_close, on_error=self._channel_error)
        self._thread = threading.Thread(target=self._run, name="pycluster-channel", daemon=True)
        self._expected_close = False
        self._after_disconnect: int | None = None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        # The MiniLoop offers the subset of asyncio's loop API the channel and
        # the emitter use; importing asyncio at boot would cost every worker ~25 ms.
        return cast("asyncio.AbstractEventLoop", self._loop)

    @property
    def channel(self) -> Channel:
        """The channel to the primary (internal and user messages)."""
        return self._channel

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
        self._loop.call_soon_threadsafe(self._begin_disconnect, int(signal.SIGTERM), True)
        return self

    def kill(self, signal: int | str = "SIGTERM") -> None:
        """Tell the primary this exit is voluntary, disconnect, then signal ourselves."""
        signum = signal_number(signal)
        self._loop.call_soon_threadsafe(self._begin_disconnect, signum, False)

    destroy = kill

    # -- the channel thread -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._channel.attach(self._event_loop())
        self._loop.run_forever()

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
        act = obj.get(ACT) if isinstance(obj, dict) else None
        if act == DISCONNECT:
            self._expected_close = True
            # signal: False is the primary's kill(): its own signal follows, and,
            # as Node's default SIGTERM, it ends the worker without a drain.
            drain = bool(obj.get("signal", True))
            self._after_disconnect = int(signal.SIGTERM) if drain else None
            self._finish_disconnect(drain)

    def _channel_error(self, exc: BaseException) -> None:
        if self.listener_count("error"):
            self.emit("error", exc)
        else:
            print(f"pycluster: worker {self.id}: IPC error: {exc}", file=sys.stderr)

    def _begin_disconnect(self, signum: int, drain: bool) -> None:
        if self._disconnecting or self._channel.closed:
            return
        self._disconnecting = True
        self._expected_close = True
        self._after_disconnect = signum

        def acknowledged(_reply: Any, _fds: list[int], _err: BaseException | None) -> None:
            self._finish_disconnect(drain)

        self._channel.request({ACT: EXITED_AFTER_DISCONNECT}, on_reply=acknowledged, timeout=5.0)

    def _finish_disconnect(self, drain: bool) -> None:
        """Stop accepting, let the app hear 'disconnect', close the channel,
        then SIGTERM ourselves (the app's own handler, or pycluster's: with
        ``drain``, SystemExit(0) once the accepted connections are closed)."""
        self._disconnecting = True
        self._stop_accepting(_DISCONNECT_STOP_TIMEOUT)
        if drain:  # a disconnect, not a kill(): Node would live on while connections are open
            self._exits.on_drain = self._start_drain_watch
        self.exited_after_disconnect = True
        self._channel.close()

    def _on_close(self) -> None:
        self.state = WorkerState.DISCONNECTED
        self._disconnecting = True
        self.emit("disconnect")
        self.closed.set()
        if not self._expected_close:
            # The primary is gone (or closed the channel raw): never outlive it.
            hard_exit(0)
        exits = self._exits
        with exits.lock:
            if exits.main_waiting:
                return  # the main program is done and waiting for us: it exits 0
            signum = self._after_disconnect
        if signum is not None:
            signal_main_thread(signum)
            if signum == signal.SIGTERM:
                self._loop.call_later(_RESIGNAL_AFTER, self._resignal)
        exits.signalled.set()

    def _resignal(self) -> None:
        """Our default SIGTERM handler has not run yet: the signal can be lost
        if it lands as the main thread enters epoll_wait (observed about once
        in a few hundred disconnects under load). Send it again; only while
        pycluster's own handler is installed, so an app's handler never sees
        a second SIGTERM from us."""
        if self._exits.explicit or not self._exits.owns_sigterm() or self._exits.inflight.draining:
            return  # (a drain has its own watch)
        signal_main_thread(signal.SIGTERM)
        self._loop.call_later(_RESIGNAL_AFTER, self._resignal)

    def _start_drain_watch(self) -> None:
        """Called in the SIGTERM handler when it defers the exit: no locks."""
        self._loop.call_soon_threadsafe(self._watch_drain)

    def _watch_drain(self) -> None:
        """The default handler is waiting for the accepted connections: once
        they are closed, SIGTERM again (and again, as in :meth:`_resignal`)."""
        exits = self._exits
        if exits.explicit or not exits.owns_sigterm():
            return
        if exits.inflight.busy():
            self._loop.call_later(DRAIN_POLL, self._watch_drain)
            return
        signal_main_thread(signal.SIGTERM)
        self._loop.call_later(_RESIGNAL_AFTER, self._watch_drain)
