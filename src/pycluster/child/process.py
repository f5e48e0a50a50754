"""A worker as a process: leaving at once, signalling the main thread,
dying with the primary, putting stdio where the primary asked, and how the
main thread leaves (:class:`ExitState`: pycluster's SIGTERM handler,
``sys.exit`` and uncaught exceptions in the main program, and the wait for
a disconnect when the main program ends while still connected).

One :class:`ExitState` per worker, owned by the runtime and shared with the
worker object (which signals the main thread after a disconnect) and the
bindings (whose stopped listeners wait for that signal).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, NoReturn

from .inflight import InFlight


def hard_exit(code: int) -> NoReturn:
    """Leave now, with stdio flushed (the channel thread cannot raise into main)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def signal_main_thread(signum: int) -> None:
    """Deliver a signal to the main thread itself. A process-directed signal
    may be taken by this (channel) thread, and then a main thread blocked in
    epoll_wait would not wake to run the Python handler."""
    ident = threading.main_thread().ident
    try:
        if ident is None:
            raise ProcessLookupError
        signal.pthread_kill(ident, signum)
    except (ProcessLookupError, OSError):
        os.kill(os.getpid(), signum)


def arm_parent_death(ppid: int) -> None:
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


def parse_stdio(spec: str) -> list[tuple[int, int]]:
    """``PYCLUSTER_STDIO``: ``target:source,...`` -> [(target, source), ...]."""
    pairs = []
    for item in spec.split(","):
        if item:
            target, source = item.split(":")
            pairs.append((int(target), int(source)))
    return pairs


def remap_stdio(spec: str, channel_fd: int) -> int:
    """Put the extra stdio descriptors at the numbers the primary asked for;
    returns the channel's descriptor (moved if it sat on a target)."""
    pairs = parse_stdio(spec)
    if not pairs:
        return channel_fd
    targets = {t for t, _ in pairs}
    if channel_fd in targets:
        channel_fd = _dup_above(channel_fd, max(targets) + 1)
    moved: dict[int, int] = {}
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


class ExitState:
    """The main thread's way out, shared by the threads that decide it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.main_waiting = False  # the main program is over, waiting for a disconnect
        self.explicit = False  # the main program is leaving on its own (sys.exit, a crash, SIGTERM)
        self.signalled = threading.Event()  # the post-disconnect signal was sent
        self.inflight = InFlight()  # the connections the shared listeners handed to the app
        # Set by the worker once its listeners are stopped (a disconnect): starts
        # the channel thread's watch that re-sends SIGTERM when the drain is over.
        # Must not block or lock: it runs in the signal handler.
        self.on_drain: Callable[[], None] | None = None
        self._sigterm = self._on_sigterm  # one bound method, so it can be recognised

    # -- SIGTERM ----------------------------------------------------------------
    def install_sigterm(self) -> None:
        """Our default SIGTERM handler, unless the app has one: ``SystemExit(0)``,
        once the connections accepted before a disconnect are closed."""
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._sigterm)

    def owns_sigterm(self) -> bool:
        """Is pycluster's own handler still the one installed?"""
        return signal.getsignal(signal.SIGTERM) is self._sigterm

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.main_waiting:
            return  # the main program is over and the process is leaving with 0 anyway
        drain = self.on_drain
        if drain is not None and self.inflight.busy():
            # Node's event loop keeps a disconnected worker alive while its
            # connections are open: the requests in flight (on the app's own
            # threads, or on this very thread below us) run to completion. The
            # watch sends SIGTERM again once they are closed; before that, only
            # the master's graceful_timeout ends the drain.
            if not self.inflight.draining:
                self.inflight.draining = True
                drain()
            return
        self.explicit = True
        raise SystemExit(0)

    # -- the main program ending --------------------------------------------------
    def leaving(self) -> None:
        """The main program is ending on purpose: do not wait for a disconnect."""
        self.explicit = True

    def wrap_exit(self) -> None:
        """sys.exit() in the main program means leave now, not wait for a disconnect."""
        original = sys.exit
        state = self

        def exit(code: Any = None) -> None:
            if threading.current_thread() is threading.main_thread():
                state.explicit = True
            original(code)

        exit.__doc__ = original.__doc__
        sys.exit = exit  # type: ignore[assignment]

        previous_hook = sys.excepthook

        def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            state.explicit = True
            previous_hook(exc_type, exc, tb)

        sys.excepthook = excepthook

    def wait_for_disconnect(self, closed: threading.Event) -> None:
        """threading's exit hook: when the main program ends while still
        connected, the worker stays in the cluster until it is disconnected
        (Node keeps a connected worker alive)."""
        if getattr(sys, "last_value", None) is not None or self.explicit:
            return
        with self.lock:
            if closed.is_set():
                return
            self.main_waiting = True
        closed.wait()
        if self.on_drain is not None:
            # A disconnect (not a kill()): daemon threads may still be serving
            # what the listeners accepted.
            self.inflight.wait_idle()
        # We exit normally now; a SIGTERM the primary sends after the disconnect
        # (kill()) must not turn that into "killed by SIGTERM" during teardown.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
