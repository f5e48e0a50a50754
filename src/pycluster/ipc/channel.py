"""The IPC channel between the primary and one worker.

One AF_UNIX stream socketpair per worker. Frames are::

    +-----------+------+------+----------+-------------------------+
    | length u32| kind | nfds | reserved | JSON payload (length B) |
    +-----------+------+------+----------+-------------------------+

``kind`` 0 is a user message, 1 an internal one: a user message can never be
mistaken for an internal one, whatever it contains. File descriptors travel
with SCM_RIGHTS attached to the frame's first byte; ``nfds`` says how many
belong to the frame, and received descriptors queue FIFO until their frame is
complete (a frame may span many reads, fds arrive with its first byte).

Internal requests carry ``seq``; replies carry ``ack``. Every request has a
deadline: an unanswered one fails with :class:`AckTimeoutError` instead of
waiting forever (Node's ack callbacks have no timeout).

The channel is driven by an asyncio loop (the primary's engine loop, or the
worker's channel thread). ``send`` may be called from any thread.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import AckTimeoutError, ChannelClosedError, ProtocolError

if TYPE_CHECKING:
    import asyncio

HEADER = struct.Struct("!IBBH")
HEADER_SIZE = HEADER.size
MAX_FRAME = 64 * 1024 * 1024  # payload bytes
MAX_FDS = 16  # per frame
KIND_USER = 0
KIND_INTERNAL = 1
_KINDS = (KIND_USER, KIND_INTERNAL)
_READ_SIZE = 256 * 1024
_CMSG_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
DEFAULT_ACK_TIMEOUT = 10.0
_OnReply = Callable[[Any, list, "BaseException | None"], None]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_loads = json.JSONDecoder(parse_constant=_no_constants).decode


def encode_frame(kind: int, obj: Any, nfds: int = 0, max_frame: int = MAX_FRAME) -> bytes:
    """Serialise one frame. Raises TypeError/ValueError for what JSON can't carry."""
    if kind not in _KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    if not 0 <= nfds <= MAX_FDS:
        raise ValueError(f"a message carries at most {MAX_FDS} file descriptors, not {nfds}")
    payload = _dumps(obj).encode("utf-8")  # a lone surrogate raises here, not at the peer
    if len(payload) > max_frame:
        raise ValueError(f"message of {len(payload)} bytes is over the {max_frame}-byte limit")
    return HEADER.pack(len(payload), kind, nfds, 0) + payload


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, get complete frames.

    Each frame is ``(kind, obj, nfds)``. Anything malformed raises
    :class:`ProtocolError` (and only that); the decoder is then unusable.
    """

    __slots__ = ("_buf", "_max", "_need", "pending_error")

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame
        self.pending_error: ProtocolError | None = None
        self._need: tuple[int, int, int] | None = None  # (length, kind, nfds) of the pending frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, Any, int]]:
        """Decode what ``data`` completes. Garbage after good frames in the
        same call is reported on the next call (``pending_error`` is set),
        so the good frames are still delivered."""
        if self.pending_error is not None:
            raise self.pending_error
        frames: list[tuple[int, Any, int]] = []
        try:
            self._feed(data, frames)
        except ProtocolError as exc:
            self.pending_error = exc  # unusable from now on: the stream lost its framing
            self._buf = bytearray()
            if not frames:
                raise
        return frames

    def _feed(self, data: bytes, frames: list) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            need = self._need
            if need is None:
                if end - pos < HEADER_SIZE:
                    break
                length, kind, nfds, reserved = HEADER.unpack_from(buf, pos)
                if kind not in _KINDS or reserved != 0 or nfds > MAX_FDS:
                    raise ProtocolError(
                        f"bad frame header (kind={kind}, nfds={nfds}, reserved={reserved})")
                if length > self._max:
                    raise ProtocolError(f"frame of {length} bytes is over the {self._max}-byte limit")
                pos += HEADER_SIZE
                need = self._need = (length, kind, nfds)
            length, kind, nfds = need
            if end - pos < length:
                break
            raw = bytes(buf[pos:pos + length])
            pos += length
            self._need = None
            try:
                obj = _loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise ProtocolError(f"frame payload is not valid UTF-8 JSON: {exc}") from None
            frames.append((kind, obj, nfds))
            del buf[:pos]
            pos = 0
            end = len(buf)
        if pos:
            del buf[:pos]


class _Outgoing:
    __slots__ = ("data", "fds", "callback")

    def __init__(self, data: bytes, fds: list[int], callback: Callable[[BaseException | None], None] | None):
        self.data = memoryview(data)
        self.fds = fds
        self.callback = callback


class Channel:
    """A framed, fd-passing, request/ack channel over a connected stream socket."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None, *,
                 on_message: Callable[[int, Any, list], None],
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
        self._fdq: deque[int] = deque()
        self._fd_deficit = 0
        self._out: deque[_Outgoing] = deque()
        self._lock = threading.Lock()
        self._writing = False
        self._seq = 0
        self._pending: dict[int, tuple[_OnReply, asyncio.TimerHandle | None]] = {}
        self.closed = False
        self._reading = False
        self._deferred: list[tuple] = []   # calls made before a loop was attached
        self._holding: list | None = None  # frames held back during a blocking request

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

    def _soon(self, fn: Callable, *args: Any) -> None:
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
        for fd in self._fdq:
            _close_fd(fd)
        self._fdq.clear()
        err = ChannelClosedError("IPC channel closed")
        for item in out:
            for fd in item.fds:
                _close_fd(fd)
            if item.callback:
                item.callback(err)
        pending, self._pending = self._pending, {}
        for on_reply, timer in pending.values():
            if timer is not None:
                timer.cancel()
            on_reply(None, [], err)
        self._on_close()

    def close_threadsafe(self) -> None:
        self._soon(self.close)

    # -- sending -----------------------------------------------------------
    def send(self, kind: int, obj: Any, fds: Iterable[int] = (),
             callback: Callable[[BaseException | None], None] | None = None) -> bool:
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

    def request(self, obj: dict, fds: Iterable[int] = (), *,
                timeout: float | None = DEFAULT_ACK_TIMEOUT,
                on_reply: Callable[[Any, list, BaseException | None], None]) -> None:
        """Send an internal request; ``on_reply(reply, fds, error)`` runs on the loop."""
        self._soon(self._request, obj, list(fds), timeout, on_reply)

    def request_sync(self, obj: dict, fds: Iterable[int] = (), *,
                     timeout: float = DEFAULT_ACK_TIMEOUT) -> tuple[Any, list]:
        """Send an internal request and block this thread for the reply.

        Works from any thread, the loop's own included (a worker may bind a
        server inside a message handler): there it reads the socket itself
        and holds other frames back until the loop runs again.
        Raises ChannelClosedError / AckTimeoutError.
        """
        result: list = []
        done = threading.Event()

        def on_reply(reply: Any, rfds: list, err: BaseException | None) -> None:
            result[:] = [reply, rfds, err]
            done.set()

        on_loop = self.loop is not None and threading.get_ident() == getattr(self.loop, "_thread_id", None)
        if not on_loop:
            self.request(obj, fds, timeout=timeout, on_reply=on_reply)
            if not done.wait(timeout + 1.0):
                raise AckTimeoutError(f"no answer to {obj.get('act')!r} request in time")
        else:
            self._blocking_request(obj, list(fds), timeout, on_reply, done)
        reply, rfds, err = result
        if err is not None:
            raise err
        return reply, rfds

    def _blocking_request(self, obj: dict, fds: list[int], timeout: float,
                          on_reply: Callable, done: threading.Event) -> None:
        import select
        import time

        if self.closed:
            on_reply(None, [], ChannelClosedError("IPC channel closed"))
            return
        self._seq += 1
        seq = self._seq
        self._pending[seq] = (on_reply, None)
        msg = dict(obj)
        msg["seq"] = seq
        outer = self._holding is None
        if outer:
            self._holding = []
        try:
            self.send(KIND_INTERNAL, msg, fds)
            deadline = time.monotonic() + timeout
            while not done.is_set() and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._expire(seq, obj.get("act"))
                    break
                w = [self._fd] if self._out else []
                r, w, _ = select.select([self._fd], w, [], left)
                if w:
                    self._write_ready()
                if r:
                    self._read_ready()
        finally:
            if outer:
                held, self._holding = self._holding, None
                for frame in held:
                    self.loop.call_soon(self._deliver, *frame)

    def _deliver(self, kind: int, obj: Any, fds: list) -> None:
        if self.closed:
            for fd in fds:
                _close_fd(fd)
            return
        self._on_message(kind, obj, fds)

    def _request(self, obj: dict, fds: list[int], timeout: float | None,
                 on_reply: Callable[[Any, list, BaseException | None], None]) -> None:
        if self.closed:
            on_reply(None, [], ChannelClosedError("IPC channel closed"))
            return
        self._seq += 1
        seq = self._seq
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(timeout, self._expire, seq, obj.get("act"))
        self._pending[seq] = (on_reply, timer)
        msg = dict(obj)
        msg["seq"] = seq
        try:
            self.send(KIND_INTERNAL, msg, fds)
        except (TypeError, ValueError) as exc:
            self._pending.pop(seq, None)
            if timer is not None:
                timer.cancel()
            on_reply(None, [], exc)

    def reply(self, request: dict, obj: dict | None = None, fds: Iterable[int] = ()) -> bool:
        msg = dict(obj) if obj else {}
        msg["act"] = "ack"  # after the caller's fields: they can never hide the ack
        msg["ack"] = request.get("seq")
        return self.send(KIND_INTERNAL, msg, fds)

    def _expire(self, seq: int, act: Any) -> None:
        entry = self._pending.pop(seq, None)
        if entry is not None:
            entry[0](None, [], AckTimeoutError(f"no answer to {act!r} request #{seq} in time"))

    def _want_write(self) -> None:
        # Called with the lock held, maybe from another thread.
        if self.loop is None:
            return  # attach() adds the writer
        if threading.get_ident() == getattr(self.loop, "_thread_id", None):
            self._add_writer()
        else:
            self.loop.call_soon_threadsafe(self._add_writer)

    def _add_writer(self) -> None:
        if not self._writing and not self.closed and self._out:
            self.loop.add_writer(self._fd, self._write_ready)
            self._writing = True

    def _write_item(self, item: _Outgoing) -> bool | None:
        """Write as much of item as the socket takes. True when all written, None on error."""
        try:
            while item.data:
                if item.fds:
                    n = self.sock.sendmsg([item.data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                         array.array("i", item.fds))])
                    for fd in item.fds:
                        _close_fd(fd)
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
                _close_fd(fd)
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
                data, ancdata, flags, _addr = self.sock.recvmsg(_READ_SIZE, _CMSG_SPACE,
                                                                socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET,):
                    self._error(exc)
                self.close()
                return
            for level, ctype, cdata in ancdata:
                if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[:len(cdata) - (len(cdata) % fds.itemsize)])
                    self._fdq.extend(fds)
            if flags & socket.MSG_CTRUNC:
                # The kernel dropped descriptors (RLIMIT_NOFILE or too many):
                # the frames that expected them get no handle and an error.
                self._fd_deficit += 1
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

    def _dispatch(self, frames: list) -> None:
        """Match fds to frames first, then deliver each; one callback that
        raises neither loses the other frames nor shifts their fds."""
        matched = []
        for kind, obj, nfds in frames:
            fds: list[int] = []
            if nfds:
                if len(self._fdq) >= nfds:
                    fds = [self._fdq.popleft() for _ in range(nfds)]
                else:
                    while self._fdq:
                        _close_fd(self._fdq.popleft())
                    if not self._fd_deficit:
                        self._error(ProtocolError(f"frame announced {nfds} fds that never came"))
                    self._fd_deficit = 0
            matched.append((kind, obj, fds))
        first_exc: BaseException | None = None
        for i, (kind, obj, fds) in enumerate(matched):
            if self.closed:
                for _k, _o, rest in matched[i:]:
                    for fd in rest:
                        _close_fd(fd)
                break
            try:
                self._deliver_one(kind, obj, fds)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                if first_exc is None:
                    first_exc = exc
        if first_exc is not None:
            raise first_exc

    def _deliver_one(self, kind: int, obj: Any, fds: list) -> None:
        if kind == KIND_INTERNAL and isinstance(obj, dict) and obj.get("act") == "ack":
            ack = obj.get("ack")
            entry = self._pending.pop(ack, None) if isinstance(ack, int) else None
            if entry is None:
                for fd in fds:
                    _close_fd(fd)
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

    def drain(self) -> None:
        """Read whatever the peer left in the socket (its process is gone)."""
        if not self.closed:
            self._read_ready()

    def _error(self, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(exc)


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A stream socketpair, both ends close-on-exec (the child end is passed explicitly)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
