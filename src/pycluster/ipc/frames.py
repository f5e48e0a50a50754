"""The IPC wire format: a pure codec (no sockets, no loop).

One AF_UNIX stream socketpair per worker carries frames::

    +-----------+------+------+----------+-------------------------+
    | length u32| kind | nfds | reserved | JSON payload (length B) |
    +-----------+------+------+----------+-------------------------+

``kind`` 0 is a user message, 1 an internal one: a user message can never be
mistaken for an internal one, whatever it contains. File descriptors travel
with SCM_RIGHTS attached to the frame's first byte; ``nfds`` says how many
belong to the frame, and received descriptors queue FIFO until their frame is
complete (a frame may span many reads, fds arrive with its first byte):
:class:`FdQueue` pairs them with the decoded frames.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Iterable
from typing import Any

from ..errors import ProtocolError

HEADER = struct.Struct("!IBBH")
HEADER_SIZE = HEADER.size
MAX_FRAME = 64 * 1024 * 1024  # payload bytes
MAX_FDS = 16  # per frame
KIND_USER = 0
KIND_INTERNAL = 1
KINDS = (KIND_USER, KIND_INTERNAL)

#: A decoded frame: (kind, payload, number of descriptors announced).
Frame = tuple[int, Any, int]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_loads = json.JSONDecoder(parse_constant=_no_constants).decode


def encode_frame(kind: int, obj: Any, nfds: int = 0, max_frame: int = MAX_FRAME) -> bytes:
    """Serialise one frame. Raises TypeError/ValueError for what JSON can't carry."""
    if kind not in KINDS:
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

    def feed(self, data: bytes) -> list[Frame]:
        """Decode what ``data`` completes. Garbage after good frames in the
        same call is reported on the next call (``pending_error`` is set),
        so the good frames are still delivered."""
        if self.pending_error is not None:
            raise self.pending_error
        frames: list[Frame] = []
        try:
            self._feed(data, frames)
        except ProtocolError as exc:
            self.pending_error = exc  # unusable from now on: the stream lost its framing
            self._buf = bytearray()
            if not frames:
                raise
        return frames

    def _feed(self, data: bytes, frames: list[Frame]) -> None:
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
                if kind not in KINDS or reserved != 0 or nfds > MAX_FDS:
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


#: Ancillary-data room for one recvmsg: the most descriptors a frame may carry.
CMSG_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)


def received_fds(ancdata: Iterable[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in a recvmsg's ancillary data (SCM_RIGHTS), in order."""
    out: list[int] = []
    for level, ctype, cdata in ancdata:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(cdata[:len(cdata) - (len(cdata) % fds.itemsize)])
            out.extend(fds)
    return out


class FdQueue:
    """Received descriptors, FIFO, handed to the frames that announced them.

    The kernel may drop descriptors (MSG_CTRUNC: RLIMIT_NOFILE, or too many):
    :meth:`lost` records that, and the frames that expected them get none.
    The queue owns what it holds: what no frame takes is closed.
    """

    __slots__ = ("_fds", "_deficit")

    def __init__(self) -> None:
        self._fds: deque[int] = deque()
        self._deficit = 0

    def __len__(self) -> int:
        return len(self._fds)

    def add(self, fds: Iterable[int]) -> None:
        self._fds.extend(fds)

    def lost(self) -> None:
        """A read came with MSG_CTRUNC: some descriptors never arrived (already reported)."""
        self._deficit += 1

    def take(self, nfds: int) -> tuple[list[int], bool]:
        """The ``nfds`` descriptors of the next frame, and whether their loss is
        news (not already reported as MSG_CTRUNC). When too few are queued, the
        frame gets none and the queue is emptied: the stream of descriptors has
        lost its alignment with the frames."""
        if not nfds:
            return [], False
        if len(self._fds) >= nfds:
            return [self._fds.popleft() for _ in range(nfds)], False
        self.close()
        unexpected = not self._deficit
        self._deficit = 0
        return [], unexpected

    def close(self) -> None:
        while self._fds:
            close_fd(self._fds.popleft())


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
