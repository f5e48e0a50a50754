"""The transport under an IPC channel: frames over a connected stream socket.

:class:`FrameStream` writes frames (from any thread: a lock guards the
outgoing queue, and the loop's writer drains what the socket did not take),
reads them on its loop, and pairs each with the descriptors it announced
(see :mod:`pycluster.ipc.frames` for the wire format). The request/ack layer
is :class:`pycluster.ipc.channel.Channel`, built on it.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ChannelClosedError, ProtocolError
from .frames import CMSG_SPACE, MAX_FRAME, FdQueue, Frame, FrameDecoder, close_fd, encode_frame, received_fds

if TYPE_CHECKING:
    import asyncio

_READ_SIZE = 256 * 1024

OnMessage = Callable[[int, Any, list[int]], None]
SendCallback = Callable[["BaseException | None"], None]
Delivery = tuple[int, Any, list[int]]  # (kind, payload, descriptors)


class _Outgoing:
    __slots__ = ("data", "fds", "callback")

    def __init__(self, data: bytes, fds: list[int], callback: SendCallback | None):
        self.data = memoryview(data)
        self.fds = fds
        self.callback = callback


class FrameStream:
    """Framed, fd-passing transport over a connected stream socket."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None, *,
                 on_message: OnMessage,
                 on_close: Callable[[], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 max_frame: int = MAX_FRAME):
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self._fd = sock.fileno()
        self._on_message = on_message
        self._on_close = on_close
        self._on_error = on_error
        self._decoder = FrameDecoder(max_frame)
        self._max_frame = max_frame
        self._fdq = FdQueue()
        self._out: deque[_Outgoing] = deque()
        self._lock = threading.Lock()
        self._writing = False
        self.closed = False
        self._reading = False
        self._deferred: list[tuple[Callable[..., object], tuple[Any, ...]]] = []  # before a loop was attached

    # -- lifecycle ---------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start serving on ``loop`` (may be called before it runs)."""
        with self._lock:
            self.loop = loop
            deferred, self._deferred = self._deferred, []
        if self.closed:
            return
        self.start()
        for fn, args in deferred:
            loop.call_soon(fn, *args)
        with self._lock:
            if self._out:
                self._add_writer()

    def start(self) -> None:
        if not self.closed and not self._reading and self.loop is not None:
            self.loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise RuntimeError("the IPC channel is not attached to a loop")
        return self.loop

    def _on_loop(self) -> bool:
        return self.loop is not None and threading.get_ident() == getattr(self.loop, "_thread_id", None)

    def _soon(self, fn: Callable[..., object], *args: Any) -> None:
        loop = self.loop
        if loop is None:
            self._deferred.append((fn, args))
        else:
            loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Close now (from the loop thread). Pending requests fail; on_close runs once."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            out, self._out = self._out, deque()
        if self._reading and self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
        if self._writing and self.loop is not None and not self.loop.is_closed():
            self.loop.remove_writer(self._fd)
        self._reading = self._writing = False
        try:
            self.sock.close()
        except OSError:
            pass
        self._fdq.close()
        err = ChannelClosedError("IPC channel closed")
        for item in out:
            for fd in item.fds:
                close_fd(fd)
            if item.callback:
                item.callback(err)
        self._closing(err)
        self._on_close()

    def _closing(self, err: ChannelClosedError) -> None:
        """Hook: the stream is closed, ``on_close`` runs next."""

    def close_threadsafe(self) -> None:
        self._soon(self.close)

    # -- sending -----------------------------------------------------------
    def send(self, kind: int, obj: Any, fds: Iterable[int] = (), callback: SendCallback | None = None) -> bool:
        """Queue a frame. Returns False (and calls back with the error) if closed.

        The fds are duplicated: the caller keeps ownership of its own.
        Raises TypeError/ValueError if ``obj`` cannot be encoded.
        """
        fds = list(fds)
        data = encode_frame(kind, obj, len(fds), self._max_frame)
        with self._lock:
            if self.closed:
                if callback:
                    callback(ChannelClosedError("IPC channel closed"))
                return False
            own = [os.dup(fd) for fd in fds]
            item = _Outgoing(data, own, callback)
            if self._out:
                self._out.append(item)
                return True
            done = self._write_item(item)
            if done is None:
                return True  # error already handled
            if not done:
                self._out.append(item)
                self._want_write()
        if done and callback:
            self._soon(callback, None)  # never synchronously (Node's send callback)
        return True

    def _want_write(self) -> None:
        # Called with the lock held, maybe from another thread.
        if self.loop is None:
            return  # attach() adds the writer
        if self._on_loop():
            self._add_writer()
        else:
            self.loop.call_soon_threadsafe(self._add_writer)

    def _add_writer(self) -> None:
        if not self._writing and not self.closed and self._out:
            self._require_loop().add_writer(self._fd, self._write_ready)
            self._writing = True

    def _write_item(self, item: _Outgoing) -> bool | None:
        """Write as much of item as the socket takes. True when all written, None on error."""
        try:
            while item.data:
                if item.fds:
                    n = self.sock.sendmsg([item.data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                         array.array("i", item.fds))])
                    for fd in item.fds:
                        close_fd(fd)
                    item.fds = []
                else:
                    n = self.sock.send(item.data)
                item.data = item.data[n:]
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            # EPIPE / ECONNRESET: the peer is gone. Report, then close from the loop.
            for fd in item.fds:
                close_fd(fd)
            item.fds = []
            if item.callback:
                # Never call back with the lock held: the callback may send.
                self._soon(item.callback, exc)
            item.callback = None
            if self._on_error is not None and exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                self._soon(self._on_error, exc)
            self._soon(self.close)
            return None

    def _write_ready(self) -> None:
        finished = []
        with self._lock:
            while self._out:
                item = self._out[0]
                done = self._write_item(item)
                if done is None:
                    self._out.popleft()
                    continue
                if not done:
                    break
                self._out.popleft()
                finished.append(item.callback)
            if not self._out and self._writing and self.loop is not None:
                self.loop.remove_writer(self._fd)
                self._writing = False
        for cb in finished:
            if cb:
                cb(None)

    @property
    def write_backlog(self) -> int:
        return sum(len(i.data) for i in self._out)

    # -- receiving ---------------------------------------------------------
    def _read_ready(self) -> None:
        for _ in range(64):
            if self.closed:
                return
            try:
                data, ancdata, flags, _addr = self.sock.recvmsg(_READ_SIZE, CMSG_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET,):
                    self._error(exc)
                self.close()
                return
            self._fdq.add(received_fds(ancdata))
            if flags & socket.MSG_CTRUNC:
                # The kernel dropped descriptors (RLIMIT_NOFILE or too many):
                # the frames that expected them get no handle and an error.
                self._fdq.lost()
                self._error(ProtocolError("file descriptors were lost in transit (MSG_CTRUNC)"))
            if not data:
                self.close()
                return
            try:
                frames = self._decoder.feed(data)
            except ProtocolError as exc:
                self._error(exc)
                self.close()
                return
            self._dispatch(frames)
            if self._decoder.pending_error is not None and not self.closed:
                self._error(self._decoder.pending_error)
                self.close()
                return

    def _dispatch(self, frames: list[Frame]) -> None:
        """Match fds to frames first, then deliver each; one callback that
        raises neither loses the other frames nor shifts their fds."""
        matched: list[Delivery] = []
        for kind, obj, nfds in frames:
            fds, unexpected = self._fdq.take(nfds)
            if unexpected:
                self._error(ProtocolError(f"frame announced {nfds} fds that never came"))
            matched.append((kind, obj, fds))
        first_exc: BaseException | None = None
        for i, (kind, obj, fds) in enumerate(matched):
            if self.closed:
                for _k, _o, rest in matched[i:]:
                    for fd in rest:
                        close_fd(fd)
                break
            try:
                self._deliver_one(kind, obj, fds)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                if first_exc is None:
                    first_exc = exc
        if first_exc is not None:
            raise first_exc

    def _deliver_one(self, kind: int, obj: Any, fds: list[int]) -> None:
        self._on_message(kind, obj, fds)

    def drain(self) -> None:
        """Read whatever the peer left in the socket (its process is gone)."""
        if not self.closed:
            self._read_ready()

    def _error(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)
