"""The stop signals of run()/serve(), owned by a context manager."""

from __future__ import annotations

import contextlib
import signal as _signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the loop starts, not before the first fork
    import asyncio


@contextlib.contextmanager
def stop_signals_handled(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None], *,
                         enabled: bool = True) -> Iterator[None]:
    """SIGINT/SIGTERM stop the cluster gracefully (a second one kills);
    handlers only record and wake; restored on the way out."""
    import threading
    installed = []
    if enabled and threading.current_thread() is threading.main_thread():
        for signum in (_signal.SIGINT, _signal.SIGTERM):
            previous = _signal.getsignal(signum)
            if previous not in (_signal.SIG_DFL, _signal.default_int_handler):
                continue  # the app has its own: leave it alone
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append((signum, previous))
    try:
        yield
    finally:
        for signum, previous in installed:
            loop.remove_signal_handler(signum)
            _signal.signal(signum, previous)
