"""The worker side's bootstrap: :func:`boot` builds one :class:`WorkerRuntime`.

A worker is a fresh interpreter re-running the primary's program with
``PYCLUSTER_WORKER_ID`` set. Importing pycluster there calls :func:`boot`:

1. read and remove pycluster's variables from the environment;
2. arm PR_SET_PDEATHSIG (after any uid change, which happened in the child
   before exec) and re-check the parent, so a SIGKILLed primary takes its
   workers with it;
3. install the default SIGTERM handler (``SystemExit(0)``), ignore SIGINT
   (Ctrl-C reaches the whole process group; the primary coordinates the
   stop) and enable faulthandler;
4. start the channel thread (a small event loop of its own,
   :mod:`~pycluster.child.loop`), tell the primary we are online, and
   install bind interception (:mod:`~pycluster.child.intercept`).

The runtime holds the worker's state and hands each piece what it needs:
the worker object (``cluster.worker``) and its channel, the registry of
shared sockets, the interception, the heartbeat and the exit state. Nothing
imported at boot imports asyncio (it would cost every worker ~25 ms).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from ..errors import WORKER_BOOT_ERROR, ChannelClosedError
from ..ipc.channel import KIND_INTERNAL
from ..ipc.messages import (
    ACT,
    APP_METRICS_FD,
    ENV_APP_METRICS,
    ENV_CHANNEL_FD,
    ENV_HEARTBEAT,
    ENV_INSPECT_PORT,
    ENV_ONLINE,
    ENV_PPID,
    ENV_STDIO,
    ENV_WORKER_ID,
    ONLINE,
    ONLINE_AFTER_LOAD,
)
from . import uvloop_hook
from .bindings import BindingContext
from .intercept import Interceptor
from .link import PrimaryLink
from .loop import MiniLoop
from .process import ExitState, arm_parent_death, hard_exit, remap_stdio
from .registry import Registry
from .worker import ChildWorker

if TYPE_CHECKING:
    from .heartbeat import Heartbeat



class BootError(Exception):
    """The worker cannot start (it exits with WORKER_BOOT_ERROR)."""


class BootSettings:
    """What the primary told this worker through its environment."""

    def __init__(self, worker_id: int, channel_fd: int, ppid: int = 0, stdio: str = "",
                 inspect_port: int | None = None, heartbeat: float | None = None, defer_online: bool = False,
                 metrics: float | None = None):
        self.metrics = metrics  # the master's --metrics: seconds between checks of the app's samples
        self.worker_id = worker_id
        self.channel_fd = channel_fd
        self.ppid = ppid
        self.stdio = stdio  # PYCLUSTER_STDIO: target:source,...
        self.inspect_port = inspect_port
        self.heartbeat = heartbeat  # the master's --timeout
        self.defer_online = defer_online  # pycluster run: online once the app loaded

    @classmethod
    def take(cls, env: MutableMapping[str, str]) -> BootSettings:
        """Read and remove pycluster's variables from ``env``."""
        worker_id = int(env.pop(ENV_WORKER_ID))
        try:
            channel_fd = int(env.pop(ENV_CHANNEL_FD))
        except (KeyError, ValueError):
            raise BootError("worker started without its channel (PYCLUSTER_CHANNEL_FD)") from None
        inspect_port = env.pop(ENV_INSPECT_PORT, None)
        heartbeat = env.pop(ENV_HEARTBEAT, None)
        metrics = env.pop(ENV_APP_METRICS, None)
        return cls(worker_id, channel_fd, int(env.pop(ENV_PPID, "0") or 0), env.pop(ENV_STDIO, ""),
                   None if inspect_port is None else int(inspect_port),
                   float(heartbeat) if heartbeat else None,
                   env.pop(ENV_ONLINE, "") == ONLINE_AFTER_LOAD, float(metrics) if metrics else None)


class WorkerRuntime:
    """Worker N's state, built by :func:`boot`."""

    def __init__(self, worker_id: int, sock: socket.socket, heartbeat: float | None = None,
                 exits: ExitState | None = None):
        self.exits = ExitState() if exits is None else exits
        self.loop = MiniLoop()
        self.registry = Registry()
        self.worker = ChildWorker(worker_id, sock, self.loop, self.exits, self.registry.stop_accepting)
        self.channel = self.worker.channel
        self.link = PrimaryLink(self.channel, self.worker.is_connected)
        self.interceptor = Interceptor(self.registry, self.link,
                                       BindingContext(self.link, self.exits.signalled,
                                                      worker_id=worker_id, inflight=self.exits.inflight))
        self.heartbeat: Heartbeat | None = None
        if heartbeat is not None:
            from .heartbeat import Heartbeat  # only under a master's --timeout
            self.heartbeat = Heartbeat(heartbeat, self.loop, self.channel, self.registry.app_loops)
        self.announced = False

    def start(self, *, online: bool = True) -> None:
        """Wrap the socket methods, start the channel thread (and the heartbeat)."""
        self.interceptor.install()
        uvloop_hook.install(self.registry)  # uvloop under rr: lanes served from Python
        self.worker.start()
        if online:
            self.announce_online()
        if self.heartbeat is not None:
            self.heartbeat.install_main_probe()
            self.heartbeat.start()
        self.exits.wrap_exit()
        threading._register_atexit(self._wait_for_disconnect)  # type: ignore[attr-defined]

    def announce_online(self) -> None:
        """Tell the primary this worker is up (once)."""
        if not self.announced:
            self.announced = True
            self.channel.send(KIND_INTERNAL, {ACT: ONLINE})

    def _wait_for_disconnect(self) -> None:
        self.exits.wait_for_disconnect(self.worker.closed)


_current: WorkerRuntime | None = None  # this process's worker (one per process)


def boot() -> WorkerRuntime:
    """Turn this process into worker N (called once, when pycluster is imported)."""
    global _current
    try:
        settings = BootSettings.take(os.environ)
    except BootError as exc:
        print(f"pycluster: {exc}", file=sys.stderr)
        hard_exit(WORKER_BOOT_ERROR)
    arm_parent_death(settings.ppid)
    channel_fd = remap_stdio(settings.stdio, settings.channel_fd) if settings.stdio else settings.channel_fd
    exits = ExitState()
    exits.install_sigterm()
    if signal.getsignal(signal.SIGINT) == signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not faulthandler.is_enabled():
        faulthandler.enable()
    try:
        sock = socket.socket(fileno=channel_fd)
    except OSError as exc:
        print(f"pycluster: worker {settings.worker_id}: bad channel fd {channel_fd}: {exc}", file=sys.stderr)
        hard_exit(WORKER_BOOT_ERROR)
    sock.set_inheritable(False)
    runtime = WorkerRuntime(settings.worker_id, sock, settings.heartbeat, exits)
    _current = runtime
    runtime.start(online=not settings.defer_online)
    if settings.metrics is not None:
        _push_metrics(settings.metrics, runtime)
    if settings.inspect_port is not None:
        _start_debugger(settings.worker_id, settings.inspect_port)
    return runtime


def _push_metrics(period: float, runtime: WorkerRuntime) -> None:
    """Under a master's --metrics: the app's samples go out on stdio[3] (child/metrics.py)."""
    from .metrics import MetricsPush  # nothing of prometheus_client imported until the app does
    try:
        sock = socket.socket(fileno=APP_METRICS_FD)
    except OSError as exc:
        print(f"pycluster: worker {runtime.worker.id}: no metrics socket on fd {APP_METRICS_FD}: {exc}",
              file=sys.stderr)
        return
    sock.set_inheritable(False)  # the app's subprocesses do not hold it
    MetricsPush(period, runtime.loop, sock).start()


def _start_debugger(worker_id: int, port: int) -> None:
    try:
        import debugpy  # type: ignore[import-not-found]
    except ImportError:
        print(f"pycluster: worker {worker_id}: inspect_port={port} needs debugpy"
              " (pip install debugpy); continuing without a debugger", file=sys.stderr)
        return
    debugpy.listen(("127.0.0.1", port))


def current() -> WorkerRuntime | None:
    """This process's worker runtime (None before boot, and in a primary)."""
    return _current


def announce_online() -> None:
    """Tell the primary this worker is up (pycluster run: once the app loaded)."""
    if _current is not None:
        _current.announce_online()


def leaving() -> None:
    """The main program is ending on purpose: do not wait for a disconnect."""
    if _current is not None:
        _current.exits.leaving()


__all__ = ["BootSettings", "ChildWorker", "WorkerRuntime", "announce_online", "boot", "current", "leaving",
           "ChannelClosedError"]
