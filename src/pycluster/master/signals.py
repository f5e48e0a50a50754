"""The master's signal handlers, owned by a context manager (STYLE habit 9).

A handler set with ``loop.add_signal_handler`` runs on the loop, never inside
the signal itself: it only turns the signal into a command (the arbiter's
``SIGNALS`` table), which runs as a task the master owns.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

SigchldSetter = Callable[[Callable[[], object]], None]


@contextlib.contextmanager
def captured_signals(loop: asyncio.AbstractEventLoop, table: Mapping[signal.Signals, dict[str, Any]],
                     on_signal: Callable[[int, dict[str, Any]], None]) -> Iterator[SigchldSetter]:
    """While inside, each signal of ``table`` calls ``on_signal(signum, command)``
    on ``loop``; yields a function that sets the SIGCHLD handler (orphan
    reaping). Every handler set is removed on the way out."""
    installed: list[int] = []

    def on_sigchld(handler: Callable[[], object]) -> None:
        loop.add_signal_handler(signal.SIGCHLD, handler)
        installed.append(signal.SIGCHLD)

    for signum, cmd in table.items():
        loop.add_signal_handler(signum, on_signal, signum, cmd)
        installed.append(signum)
    try:
        yield on_sigchld
    finally:
        for number in dict.fromkeys(installed):
            loop.remove_signal_handler(number)
