"""The arbiter's side of ``--preload``: the lifecycle of its fork server.

Start it, wait until it imported the app (its import-time output goes to
the master's log), notice when it stalls (kill it) or exits (start a fresh
one), retire it (a reload swaps in a new one), and reap what comes back to
the master as a child subreaper.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any, Protocol

from ...errors import EXIT_USAGE
from ...primary.spawn import credentials as spawn_credentials
from ...primary.spawn import exec_refused
from ..logs import LineSplitter, LogBook
from ..orphans import reap_orphans
from ..slots import Slot
from .client import ForkServer

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Coroutine

RETIRE_GRACE = 5.0  # seconds a retired fork server has to leave after its EOF before it is killed


class Host(Protocol):
    """What the keeper needs of the arbiter."""

    cfg: Any
    name: str
    state: str
    logs: LogBook
    loop: asyncio.AbstractEventLoop | None
    engine: Any

    @property
    def slots(self) -> dict[int, Slot]: ...
    def worker_env(self) -> dict[str, str]: ...
    def spawn(self, slot: Slot) -> None: ...
    def halt(self, failure: str, *, code: int = ...) -> None: ...
    def keep_task(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]: ...


class ForkServerKeeper:
    def __init__(self, host: Host):
        self.host = host
        self.current: ForkServer | None = None  # the fork server new workers are asked of
        self.retired_pids: set[int] = set()  # retired ones, reaped here (not as orphans)
        self.task: asyncio.Task[Any] | None = None  # waiting for a restarted one to be ready

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self.host.loop is not None, "the fork server is watched from the master's loop"
        return self.host.loop

    def start(self) -> ForkServer:
        """Start a fork server for the configured app (not yet ready: see ``ready``)."""
        host = self.host
        settings = host.engine.settings
        credentials = spawn_credentials(settings.get("uid"), settings.get("gid"))
        server = ForkServer(host.cfg.app, env={**os.environ, **host.worker_env()}, cwd=settings.get("cwd"),
                            credentials=credentials)
        try:
            server.start()
        except PermissionError as exc:
            raise exec_refused(exc, "the fork server", sys.executable, settings.get("uid"), settings.get("gid"),
                               switching=bool(credentials)) from None
        return server

    async def ready(self, server: ForkServer) -> bool:
        """Wait until ``server`` imported the app; then it launches workers."""
        host = self.host
        self.forward_output(server)
        error = await server.wait_ready(host.cfg.boot_timeout)
        if error is not None:
            self.retire(server)
            if host.state == "starting" and server.usage_error:
                host.halt(error.removeprefix("pycluster: "), code=EXIT_USAGE)
            elif host.state == "starting":
                host.halt(f"{host.name}: the fork server could not load the app: {error.removeprefix('pycluster: ')}")
            return False
        host.logs.master(f"fork server (pid {server.pid}) loaded {host.cfg.app}")
        assert server.pidfd is not None
        self.loop.add_reader(server.pidfd, self.exited, server)
        server.log = host.logs.master
        server.on_stall = self.stalled
        server.listen(self.loop)
        if server is self.current:
            self.restart_waiting()
        return True

    def restart_waiting(self) -> None:
        """A new fork server is ready: slots backing off after failed starts start now."""
        for slot in self.host.slots.values():
            if slot.worker is None and slot.launching is None and slot.retry is not None:
                slot.retry.cancel()
                self.host.spawn(slot)

    def stalled(self, server: ForkServer) -> None:
        """A fork request went unanswered: the fork server is stuck (an app's
        at-fork hook, a signal handler, a debugger...). Kill it: its exit
        starts a fresh one (``exited``) and the slot that waited restarts as
        after any failed start."""
        self.host.logs.master(f"the fork server (pid {server.pid}) did not answer a fork request within"
                              f" {server.timeout:g}s: stalled; killing it")
        if server.pidfd is not None:
            try:
                signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
            except OSError:
                pass

    def forward_output(self, server: ForkServer) -> None:
        """The app's import-time output, cut into lines and made printable, goes to the master's log."""
        assert server.proc is not None
        for pipe in (server.proc.stdout, server.proc.stderr):
            if pipe is not None:
                self._forward(pipe)

    def _forward(self, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        os.set_blocking(fd, False)
        lines = LineSplitter()
        log = self.host.logs.master

        def read() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                for line in lines.flush():
                    log("fork server: " + line)
                self.loop.remove_reader(fd)
                pipe.close()
                return
            for line in lines.feed(data):
                log("fork server: " + line)
        self.loop.add_reader(fd, read)

    def exited(self, server: ForkServer) -> None:
        assert server.pidfd is not None and server.proc is not None
        self.loop.remove_reader(server.pidfd)
        server.reap()
        if server is not self.current or self.host.state in ("stopping", "reloading"):
            return  # (a reload's new fork server: the reload fails and keeps the old one)
        self.host.logs.master(f"the fork server (pid {server.pid}) exited with {server.proc.returncode};"
                              f" starting a new one")
        self.retire(server)
        self.restart()

    def restart(self) -> None:
        self.current = self.start()
        self.task = self.host.keep_task(self.ready(self.current), "starting a new fork server")

    def reap_orphans(self) -> None:
        """SIGCHLD: reap what came back to us, except the fork servers reaped through their pidfds."""
        server = self.current
        reap_orphans(skip=self.retired_pids | ({server.pid} if server is not None and server.pid else set()))

    def retire(self, server: ForkServer) -> None:
        """Close its socket (it exits at the EOF); reap it when its pidfd says so."""
        server.stop()
        loop = self.host.loop
        if server.pidfd is None or server.pid is None or loop is None or loop.is_closed():
            return
        self.retired_pids.add(server.pid)  # reaped here, not as an orphan
        try:
            loop.remove_reader(server.pidfd)
        except (ValueError, OSError):
            pass
        loop.add_reader(server.pidfd, self._gone, server)
        loop.call_later(RETIRE_GRACE, self._late, server)

    def close(self) -> None:
        """The master is leaving: stop waiting for a new fork server, retire the current one."""
        if self.task is not None:
            self.task.cancel()
        if self.current is not None:
            self.retire(self.current)

    def _gone(self, server: ForkServer) -> None:
        if server.pidfd is not None:
            self.loop.remove_reader(server.pidfd)
        server.reap()
        if server.pid is not None:
            self.retired_pids.discard(server.pid)

    @staticmethod
    def _late(server: ForkServer) -> None:
        if server.pidfd is not None and server.proc is not None and server.proc.poll() is None:
            server.proc.kill()  # the pidfd reader reaps it
