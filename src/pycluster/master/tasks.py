"""Background tasks the master owns (STYLE habit 14: nothing fails silently).

A task created bare can be garbage-collected while it runs, and its
exception is only reported (if ever) when it is collected. Every task the
master starts goes through :class:`TaskSet`: kept until it ends, its failure
logged with its traceback.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Coroutine
from typing import Any


class TaskSet:
    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.running: set[asyncio.Task[Any]] = set()

    def keep(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` on ``loop``, kept until it ends; a failure is logged as ``what`` failed."""
        task = loop.create_task(coro)
        self.running.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self.running.discard(task)
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
                self.log(f"{what} failed: {exc!r}\n{trace}")

        task.add_done_callback(done)
        return task

    def __len__(self) -> int:
        return len(self.running)
