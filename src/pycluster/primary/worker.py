"""A worker as the primary sees it (``cluster.workers[id]``).

The underscored attributes are the engine's (primary/ only): the process,
its pidfd and its IPC channel. The worker never imports the engine; it talks
to it through :class:`Owner`.
"""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.common import handle_fds, signal_number
from ..core.worker import Worker, WorkerState
from ..ipc.channel import KIND_USER, Channel

if TYPE_CHECKING:  # imported when the loop starts, not before the first fork
    import asyncio
    import socket

    from .spawn import Process

# A primary-side kill() disconnects first; a worker whose channel thread
# cannot answer (a C loop holding the GIL) is signalled after this anyway.
KILL_DISCONNECT_TIMEOUT = 5.0


class Owner(Protocol):
    """What a worker needs of its engine."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None: ...

    def handler_failed(self, exc: BaseException) -> None: ...

    def disconnect_worker(self, worker: PrimaryWorker) -> None: ...


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

    def __init__(self, engine: Owner, id: int):
        super().__init__(id, loop_getter=lambda: engine.loop, on_error=engine.handler_failed)
        self._engine = engine
        self._popen: Process | None = None
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._channel: Channel | None = None
        self._disconnected = False
        self._exited = False
        self._disconnecting = False
        self._kill_signal: int | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self.exit_code: int | None = None
        self.signal_code: str | None = None
        self.stdout: Any = None
        self.stderr: Any = None
        self.stdio: list[Any] = []
        self.handle_keys: set[str] = set()  # the listener keys this worker was given
        self.listening_keys: set[str] = set()  # ... and those it listens on
        self.last_heartbeat: float | None = None
        # The --timeout the worker was started with (PYCLUSTER_HEARTBEAT; 0: it sends
        # none): a supervisor judges each worker by its own contract. None: not recorded.
        self.heartbeat_timeout: float | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def process(self) -> Any:
        if self._process is None and self._pid is not None:
            from ..core.stats import process_for
            self._process = process_for(self._pid)
        return self._process

    def thread_ids(self, limit: int = 4096) -> list[int]:
        """The ids of the worker's threads (at most ``limit``), while it is not
        reaped: until then its pid is held for us (we hold its pidfd and are
        its parent or subreaper), so it names no other process. [] after."""
        if self._pidfd is None or self._pid is None:
            return []
        tids: list[int] = []
        try:
            with os.scandir(f"/proc/{self._pid}/task") as it:
                for entry in it:
                    if len(tids) >= limit:
                        break
                    if entry.name.isdigit():
                        tids.append(int(entry.name))
        except OSError:
            return []
        return tids

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
        self._engine.disconnect_worker(self)
        return self

    def kill(self, signal: int | str = "SIGTERM") -> None:
        """Disconnect, then signal the worker (a voluntary exit: not replaced)."""
        signum = signal_number(signal)
        self.exited_after_disconnect = True
        if self.is_connected():
            self._kill_signal = signum
            self._engine.disconnect_worker(self)
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

    # -- the engine's side (primary/ only) --------------------------------------
    def _started(self, popen: Process, pidfd: int, channel: Channel,
                 extra_stdio: list[socket.socket | None]) -> None:
        self._pidfd = pidfd
        self._popen = popen
        self._pid = popen.pid
        self.stdout, self.stderr = popen.stdout, popen.stderr
        self.stdio = [popen.stdin, popen.stdout, popen.stderr, *extra_stdio]
        self._channel = channel

    def _watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[PrimaryWorker], None]) -> None:
        assert self._channel is not None
        self._channel.attach(loop)
        if self._pidfd is not None and not self._exited:
            loop.add_reader(self._pidfd, on_exit, self)

    def _poll_exit(self) -> tuple[int | None, str | None] | None:
        """(code, signal) once the process has exited (reaped now), None while
        it runs (a spurious wake-up); (None, None) if someone else reaped it."""
        assert self._pidfd is not None
        try:
            res = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return None, None
        if res is None or res.si_pid == 0:
            return None
        return decode_waitid(res)

    def _reaped(self, loop: asyncio.AbstractEventLoop, code: int | None, sig: str | None) -> None:
        """Let go of the exited process: its pidfd, our pipe ends, its channel."""
        assert self._pidfd is not None
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._popen is not None:
            # We reaped it: keep subprocess from ever waiting on that pid.
            self._popen.returncode = code if code is not None else -signal_number(sig or 15)
            stdin = self._popen.stdin  # our end of its stdin pipe: nobody reads it any more
            if stdin is not None:
                try:
                    stdin.close()
                except OSError:
                    pass
        # The worker's last words are in the socket: deliver them, then EOF.
        if self._channel is not None and not self._channel.closed:
            self._channel.drain()
            self._channel.close()
        self._exited = True
        self.exit_code, self.signal_code = code, sig
        self.state = WorkerState.DEAD
        self.exited_after_disconnect = bool(self.exited_after_disconnect)
