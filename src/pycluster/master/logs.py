"""Worker output: read line by line, prefixed, kept, forwarded - never blocking.

The master reads each worker's stdout/stderr pipe with its *own* end
non-blocking (the worker's end stays blocking: O_NONBLOCK lives on the open
file description). Lines go into a ring buffer (``pycluster logs``), to
followers (``logs -f``), and to a writer thread that owns the blocking
writes to the terminal / log file; when that sink falls behind, lines are
dropped and counted instead of stalling the loop.

A worker's output is a stranger's: a line is cut at ``MAX_LINE`` bytes (the
rest of it is skipped and counted, so a line that never ends costs nothing),
control characters are made visible (``\\x1b``) so that escape sequences never
reach an operator's terminal, and every place a line waits for a slow
consumer (the sink, each follower, the ring) is bounded in lines and in
characters.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..core.common import printable
from .logsink import Sink, open_log

Entry = dict[str, Any]  # one log line: {"t", "worker", "pid", "stream", "line"} (core.logline formats it)

MAX_LINE = 16 * 1024  # bytes of one line kept; the rest is cut (and counted)
READ_SIZE = 64 * 1024
DRAIN_MAX = 4 * READ_SIZE  # what is read from a dead worker's pipe before it is closed
RING = 2000
RING_CHARS = 4 * 2 ** 20  # the ring's lines, in characters
FOLLOW_LINES = 10_000  # lines waiting for one `logs -f` client
FOLLOW_CHARS = 2 ** 20
FOLLOW_BATCH = 256 * 1024  # characters sent to a follower in one reply
MAX_REPLY = 2 ** 20  # bytes of JSON-encoded lines in one `logs` reply

class LineSplitter:
    """Bytes of one pipe in, printable lines out; a line over ``MAX_LINE`` bytes
    keeps its first ``MAX_LINE`` bytes and says how many were cut."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.cut = 0  # bytes skipped of the current (over-long) line

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl
            room = MAX_LINE - len(self.buf)
            if end - start <= room:
                self.buf += data[start:end]
            else:
                self.buf += data[start:start + room]
                self.cut += end - start - room
            if nl < 0:
                return out
            out.append(self._take())
            start = nl + 1

    def flush(self) -> list[str]:
        """The unfinished line, if any (the pipe is at its end)."""
        return [self._take()] if self.buf or self.cut else []

    def _take(self) -> str:
        text = printable(bytes(self.buf).decode("utf-8", "replace").rstrip("\r"))
        if self.cut:
            text += f" [... {self.cut} bytes cut: line over {MAX_LINE} bytes]"
        self.buf = bytearray()
        self.cut = 0
        return text


class Follower:
    """One ``logs -f`` client's backlog, bounded in lines and characters. What
    does not fit is dropped; a notice saying how many takes their place."""

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.chars = 0
        self.gap: Entry | None = None  # the notice standing for lines being dropped now
        self.wake = asyncio.Event()
        self.closed = False

    def __call__(self, entry: Entry) -> None:
        size = len(entry["line"])
        if len(self.entries) >= FOLLOW_LINES or self.chars + size > FOLLOW_CHARS:
            if self.gap is None:
                self.gap = {"t": entry["t"], "worker": None, "stream": "master", "line": "", "dropped": 0}
                self.entries.append(self.gap)
            self.gap["dropped"] += 1
            return
        self._seal()
        self.entries.append(entry)
        self.chars += size
        self.wake.set()

    def _seal(self) -> None:
        if self.gap is not None:
            count = self.gap.pop("dropped")
            self.gap["line"] = f"{count} log lines dropped (this logs -f client reads too slowly)"
            self.chars += len(self.gap["line"])
            self.gap = None

    def close(self) -> None:
        """The client hung up."""
        self.closed = True
        self.wake.set()

    async def batch(self) -> list[Entry] | None:
        """The next lines to send (waits for some); None once the client hung up."""
        while not self.entries and not self.closed:
            self.wake.clear()
            await self.wake.wait()
        if self.closed:
            return None
        out: list[Entry] = []
        size = 0
        while self.entries and size < FOLLOW_BATCH:
            entry = self.entries.popleft()
            if entry is self.gap:
                self._seal()
            self.chars -= len(entry["line"])
            size += len(entry["line"])
            out.append(entry)
        return out


class LogBook:
    def __init__(self, log_file: str | None = None, log_format: str = "text"):
        self.ring: deque[Entry] = deque(maxlen=RING)
        self.ring_chars = 0
        self.followers: set[Callable[[Entry], None]] = set()
        self.pid = os.getpid()
        self.sink = Sink(log_file, log_format, self.pid)
        self.sink.start()
        self._readers: dict[int, list[Any]] = {}

    def lines_reach_stderr(self) -> bool:
        """Do workers' lines go where the master's stderr goes (a terminal, or
        one file for both)? A boot failure then need not repeat its stderr tail."""
        if self.sink.fd is not None:
            return False
        try:
            out, err = os.fstat(1), os.fstat(2)
        except OSError:
            return False
        return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)

    def master(self, text: str) -> None:
        # The master's own line breaks stay (a reload failure lists stderr lines below it).
        self._line(None, "master", "\n".join(map(printable, text.split("\n"))))

    def _line(self, worker_id: int | None, stream: str, text: str, pid: int | None = None) -> None:
        entry = {"t": round(time.time(), 3), "worker": worker_id, "pid": self.pid if worker_id is None else pid,
                 "stream": stream, "line": text}
        if len(self.ring) == self.ring.maxlen:
            self.ring_chars -= len(self.ring[0]["line"])
        self.ring.append(entry)
        self.ring_chars += len(text)
        while self.ring_chars > RING_CHARS and len(self.ring) > 1:
            self.ring_chars -= len(self.ring.popleft()["line"])
        self.sink.put(entry, master=worker_id is None)
        for follower in list(self.followers):
            follower(entry)

    def attach(self, worker: Any, loop: Any, stderr_tail: deque[str]) -> None:
        readers = []
        for stream, pipe in (("stdout", worker.stdout), ("stderr", worker.stderr)):
            if pipe is None:
                continue
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            state = {"lines": LineSplitter(), "fd": fd, "pipe": pipe, "stream": stream, "loop": loop,
                     "tail": stderr_tail if stream == "stderr" else None, "pid": worker.pid}
            loop.add_reader(fd, self._read, worker.id, state)
            readers.append(state)
        self._readers[worker.id] = readers

    def _read(self, worker_id: int, state: dict[str, Any]) -> None:
        try:
            data = os.read(state["fd"], READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(worker_id, state)
            return
        for text in state["lines"].feed(data):
            self._emit(worker_id, state, text)

    def _emit(self, worker_id: int, state: dict[str, Any], text: str) -> None:
        if state["tail"] is not None:
            state["tail"].append(text)
        self._line(worker_id, state["stream"], text, state["pid"])

    def _close(self, worker_id: int, state: dict[str, Any]) -> None:
        for text in state["lines"].flush():
            self._emit(worker_id, state, text)
        state["loop"].remove_reader(state["fd"])
        state["pipe"].close()

    def detach(self, worker: Any) -> None:
        """The worker exited: take what its pipes readily hold, then close our
        ends, even when a process it forked still holds the other ends (a
        daemon keeping stdout/stderr would otherwise cost two fds per restart)."""
        for state in self._readers.pop(worker.id, []):
            if state["pipe"].closed:
                continue
            taken = 0
            while taken < DRAIN_MAX:
                try:
                    data = os.read(state["fd"], READ_SIZE)
                except OSError:  # BlockingIOError: nothing more right now
                    break
                if not data:
                    break
                taken += len(data)
                for text in state["lines"].feed(data):
                    self._emit(worker.id, state, text)
            self._close(worker.id, state)

    def follow(self) -> Follower:
        """A new ``logs -f`` client's backlog, fed every line from now on
        (``unfollow`` it when the client leaves)."""
        follower = Follower()
        self.followers.add(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        self.followers.discard(follower)

    def tail(self, lines: int) -> tuple[list[Entry], int]:
        """The last ``lines`` lines, as many as fit in a ``MAX_REPLY``-byte reply,
        and how many of those asked for were left out to fit."""
        if lines <= 0:
            return [], 0
        import json
        wanted = list(self.ring)[-lines:]
        size = 0
        keep = 0
        for entry in reversed(wanted):
            size += len(json.dumps(entry["line"])) + 64  # + the entry's other keys
            if size > MAX_REPLY:
                break
            keep += 1
        return (wanted[len(wanted) - keep:] if keep else []), len(wanted) - keep

    def flush(self) -> None:
        self.sink.flush()

    def reopen(self) -> str | None:
        """SIGUSR1 / ``reopen``: open the log file's path afresh (logrotate moved
        the file). When that fails (the directory gone, the disk full) the
        writer keeps the file it has, the failure is logged, and the next
        reopen tries again. Returns the failure, or None."""
        path = self.sink.log_file
        if not path:
            return None
        try:
            fd = open_log(path, block=False)
        except OSError as exc:
            failure = f"cannot reopen the log file {path}: {exc.strerror or exc}; still writing to the one open"
            self.master(failure)
            return failure
        self.sink.swap(fd)
        return None

    def close(self) -> None:
        self.sink.close()
