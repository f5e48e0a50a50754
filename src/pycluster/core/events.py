"""A small EventEmitter with Node's on/once/off/emit semantics.

Handlers may be plain callables or coroutine functions, and may declare
fewer parameters than the event carries. Coroutine handlers
are scheduled as tasks on the emitter's loop (``loop_getter``); a plain
handler's exception goes to ``on_error`` (the primary stops its loop and
re-raises it from ``run()``, as an uncaught exception ends a Node process).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

Handler = Callable[..., Any]


class EventEmitter:
    __slots__ = ("_handlers", "_loop_getter", "_on_error", "__weakref__")

    def __init__(self, loop_getter: Callable[[], asyncio.AbstractEventLoop | None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        self._handlers: dict[str, list[tuple[Handler, int | None, bool]]] = {}
        self._loop_getter = loop_getter
        self._on_error = on_error

    def on(self, event: str, handler: Handler | None = None):
        """Register ``handler`` for ``event``; usable as a decorator."""
        if handler is None:
            return lambda fn: self.on(event, fn)
        self._check(event, handler)
        self._handlers.setdefault(event, []).append((handler, _arity(handler), False))
        self._added(event)
        return handler

    add_listener = on

    def once(self, event: str, handler: Handler | None = None):
        if handler is None:
            return lambda fn: self.once(event, fn)
        self._check(event, handler)
        self._handlers.setdefault(event, []).append((handler, _arity(handler), True))
        self._added(event)
        return handler

    def off(self, event: str, handler: Handler) -> None:
        entries = self._handlers.get(event)
        if not entries:
            return
        for i, (fn, _n, _once) in enumerate(entries):
            if fn is handler:
                del entries[i]
                break
        if not entries:
            del self._handlers[event]

    remove_listener = off

    def remove_all_listeners(self, event: str | None = None) -> None:
        if event is None:
            self._handlers.clear()
        else:
            self._handlers.pop(event, None)

    def listener_count(self, event: str) -> int:
        return len(self._handlers.get(event, ()))

    def listeners(self, event: str) -> list[Handler]:
        return [entry[0] for entry in self._handlers.get(event, ())]

    def emit(self, event: str, *args: Any) -> bool:
        entries = self._handlers.get(event)
        if not entries:
            return False
        # Snapshot: handlers added during emit run on the next emit (Node).
        snapshot = list(entries)
        for fn, _n, once in snapshot:
            if once:
                self.off(event, fn)
        for fn, n, _once in snapshot:
            try:
                result = fn(*args) if n is None else fn(*args[:n])
                if hasattr(result, "__await__"):
                    self._schedule(result)
            except BaseException as exc:  # noqa: BLE001 - routed to on_error
                if self._on_error is None:
                    raise
                self._on_error(exc)
        return True

    # -- internals ---------------------------------------------------------
    def _added(self, event: str) -> None:
        """Hook for subclasses (the worker flushes queued messages)."""

    @staticmethod
    def _check(event: str, handler: Handler) -> None:
        if not isinstance(event, str):
            raise TypeError(f"event name must be a str, not {type(event).__name__}")
        if not callable(handler):
            raise TypeError(f"handler for {event!r} must be callable, not {type(handler).__name__}")

    def _schedule(self, awaitable: Any) -> None:
        import asyncio
        loop = self._loop_getter() if self._loop_getter else None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            asyncio.run(_await(awaitable))
            return
        task = loop.create_task(_await(awaitable))
        if task is not None and self._on_error is not None:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._on_error is not None:
            self._on_error(exc)


def _arity(fn: Handler) -> int | None:
    """How many positional arguments ``fn`` takes (None: any number).

    Node passes every argument and JavaScript drops the extras; Python would
    raise, so a handler declared with fewer parameters gets only the first
    ones (``cluster.on("exit", lambda worker: ...)`` works).
    """
    func = getattr(fn, "__func__", None)
    if func is not None and getattr(fn, "__self__", None) is not None:
        code = getattr(func, "__code__", None)  # a bound method: self is already bound
        bound = 1
    else:
        code = getattr(fn, "__code__", None)
        bound = 0
    if (code is not None and getattr(fn, "__wrapped__", None) is None
            and getattr(fn, "__signature__", None) is None and not isinstance(fn, functools.partial)):
        if code.co_flags & 0x04:  # CO_VARARGS
            return None
        return max(code.co_argcount - bound, 0)
    import inspect  # partials, callables, wrapped functions: the slow, general way
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


async def _await(awaitable: Any) -> Any:
    return await awaitable
