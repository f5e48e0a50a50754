"""The IPC channel between the primary and one worker.

One AF_UNIX stream socketpair per worker, carrying the frames of
:mod:`pycluster.ipc.frames` (user and internal kinds, descriptors with
SCM_RIGHTS) over the transport of :mod:`pycluster.ipc.stream`. The channel
adds the request/ack layer: internal requests carry ``seq``; replies carry
``ack``. Every request has a deadline: an unanswered one fails with
:class:`AckTimeoutError` instead of waiting forever (Node's ack callbacks have
no timeout).

The channel is driven by an asyncio loop (the primary's engine loop, or the
worker's channel thread). ``send`` may be called from any thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import AckTimeoutError, ChannelClosedError
from . import messages
from .frames import (
    HEADER,
    HEADER_SIZE,
    KIND_INTERNAL,
    KIND_USER,
    MAX_FDS,
    MAX_FRAME,
    FrameDecoder,
    close_fd,
    encode_frame,
)
from .stream import Delivery, FrameStream, OnMessage

if TYPE_CHECKING:
    import asyncio

# The names other modules import from here (the codec's among them).
__all__ = ["HEADER", "HEADER_SIZE", "KIND_INTERNAL", "KIND_USER", "MAX_FDS", "MAX_FRAME", "DEFAULT_ACK_TIMEOUT",
           "Channel", "FrameDecoder", "FrameStream", "OnReply", "encode_frame", "socketpair"]

DEFAULT_ACK_TIMEOUT = 10.0
OnReply = Callable[[Any, list[int], "BaseException | None"], None]


class Channel(FrameStream):
    """A framed, fd-passing, request/ack channel over a connected stream socket."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None, *,
                 on_message: OnMessage,
                 on_close: Callable[[], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 max_frame: int = MAX_FRAME):
        super().__init__(sock, loop, on_message=on_message, on_close=on_close, on_error=on_error,
                         max_frame=max_frame)
        self._seq = 0
        self._pending: dict[int, tuple[OnReply, asyncio.TimerHandle | None]] = {}
        self._holding: list[Delivery] | None = None  # frames held back during a blocking request

    def request(self, obj: dict[str, Any], fds: Iterable[int] = (), *,
                timeout: float | None = DEFAULT_ACK_TIMEOUT, on_reply: OnReply) -> None:
        """Send an internal request; ``on_reply(reply, fds, error)`` runs on the loop."""
        self._soon(self._request, obj, list(fds), timeout, on_reply)

    def request_sync(self, obj: dict[str, Any], fds: Iterable[int] = (), *,
                     timeout: float = DEFAULT_ACK_TIMEOUT) -> tuple[Any, list[int]]:
        """Send an internal request and block this thread for the reply.

        Works from any thread, the loop's own included (a worker may bind a
        server inside a message handler): there it reads the socket itself
        and holds other frames back until the loop runs again.
        Raises ChannelClosedError / AckTimeoutError.
        """
        result: list[Any] = []
        done = threading.Event()

        def on_reply(reply: Any, rfds: list[int], err: BaseException | None) -> None:
            result[:] = [reply, rfds, err]
            done.set()

        if not self._on_loop():
            self.request(obj, fds, timeout=timeout, on_reply=on_reply)
            if not done.wait(timeout + 1.0):
                raise AckTimeoutError(f"no answer to {obj.get(messages.ACT)!r} request in time")
        else:
            self._blocking_request(obj, list(fds), timeout, on_reply, done)
        reply, rfds, err = result
        if err is not None:
            raise err
        return reply, rfds

    def _next_request(self, obj: dict[str, Any], on_reply: OnReply,
                      timer: Callable[[int], asyncio.TimerHandle | None]) -> tuple[int, dict[str, Any]]:
        """Number a request and register its reply callback: (seq, the message to send)."""
        self._seq += 1
        seq = self._seq
        self._pending[seq] = (on_reply, timer(seq))
        msg = dict(obj)
        msg[messages.SEQ] = seq
        return seq, msg

    def _blocking_request(self, obj: dict[str, Any], fds: list[int], timeout: float,
                          on_reply: OnReply, done: threading.Event) -> None:
        import select
        import time

        if self.closed:
            on_reply(None, [], ChannelClosedError("IPC channel closed"))
            return
        seq, msg = self._next_request(obj, on_reply, lambda _seq: None)
        outer = self._holding is None
        if outer:
            self._holding = []
        try:
            self.send(KIND_INTERNAL, msg, fds)
            deadline = time.monotonic() + timeout
            while not done.is_set() and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._expire(seq, obj.get(messages.ACT))
                    break
                w = [self._fd] if self._out else []
                r, w, _ = select.select([self._fd], w, [], left)
                if w:
                    self._write_ready()
                if r:
                    self._read_ready()
        finally:
            if outer:
                held, self._holding = self._holding or [], None
                loop = self._require_loop()
                for frame in held:
                    loop.call_soon(self._deliver, *frame)

    def _deliver(self, kind: int, obj: Any, fds: list[int]) -> None:
        if self.closed:
            for fd in fds:
                close_fd(fd)
            return
        self._on_message(kind, obj, fds)

    def _request(self, obj: dict[str, Any], fds: list[int], timeout: float | None, on_reply: OnReply) -> None:
        if self.closed:
            on_reply(None, [], ChannelClosedError("IPC channel closed"))
            return
        loop = self._require_loop()
        act = obj.get(messages.ACT)

        def timer(seq: int) -> asyncio.TimerHandle | None:
            return None if timeout is None else loop.call_later(timeout, self._expire, seq, act)

        seq, msg = self._next_request(obj, on_reply, timer)
        try:
            self.send(KIND_INTERNAL, msg, fds)
        except (TypeError, ValueError) as exc:
            entry = self._pending.pop(seq, None)
            if entry is not None and entry[1] is not None:
                entry[1].cancel()
            on_reply(None, [], exc)

    def reply(self, request: dict[str, Any], obj: dict[str, Any] | None = None, fds: Iterable[int] = ()) -> bool:
        msg = dict(obj) if obj else {}
        msg[messages.ACT] = messages.ACK  # after the caller's fields: they can never hide the ack
        msg[messages.ACK] = request.get(messages.SEQ)
        return self.send(KIND_INTERNAL, msg, fds)

    def _expire(self, seq: int, act: Any) -> None:
        entry = self._pending.pop(seq, None)
        if entry is not None:
            entry[0](None, [], AckTimeoutError(f"no answer to {act!r} request #{seq} in time"))

    def _closing(self, err: ChannelClosedError) -> None:
        pending, self._pending = self._pending, {}
        for on_reply, timer in pending.values():
            if timer is not None:
                timer.cancel()
            on_reply(None, [], err)

    def _deliver_one(self, kind: int, obj: Any, fds: list[int]) -> None:
        if kind == KIND_INTERNAL and isinstance(obj, dict) and obj.get(messages.ACT) == messages.ACK:
            ack = obj.get(messages.ACK)
            entry = self._pending.pop(ack, None) if isinstance(ack, int) else None
            if entry is None:
                for fd in fds:
                    close_fd(fd)
                return
            on_reply, timer = entry
            if timer is not None:
                timer.cancel()
            on_reply(obj, fds, None)
            return
        if self._holding is not None:
            self._holding.append((kind, obj, fds))
            return
        self._on_message(kind, obj, fds)


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A stream socketpair, both ends close-on-exec (the child end is passed explicitly)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
