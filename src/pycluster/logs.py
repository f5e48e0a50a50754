"""Worker output: read line by line, prefixed, kept, forwarded - never blocking.

The master reads each worker's stdout/stderr pipe with its *own* end
non-blocking (the worker's end stays blocking: O_NONBLOCK lives on the open
file description). Lines go into a ring buffer (``pycluster logs``), to
followers (``logs -f``), and to a writer thread that owns the blocking
writes to the terminal / log file; when that sink falls behind, lines are
dropped and counted instead of stalling the loop.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

MAX_LINE = 16 * 1024
READ_SIZE = 64 * 1024
RING = 2000
SINK_QUEUE = 10_000


class _Sink(threading.Thread):
    """Owns blocking writes (terminal, log file) so the loop never waits on them."""

    def __init__(self, log_file: str | None):
        super().__init__(name="pycluster-log-writer", daemon=True)
        # Unbounded queue, bounded by us: workers' lines beyond SINK_QUEUE
        # waiting are dropped (and counted); the master's own lines (a few per
        # event) get room of their own, so "ready" and "scale" lines survive a flood.
        self.q: queue.Queue = queue.Queue()
        self.waiting = {False: 0, True: 0}  # lines queued, by "is the master's own"
        self.lock = threading.Lock()
        self.log_file = log_file
        self.fh = None
        self.dropped = 0
        self._open()

    def _open(self) -> None:
        if self.log_file:
            self.fh = open(self.log_file, "a", buffering=1, encoding="utf-8", errors="replace")

    def put(self, line: str, master: bool = False) -> None:
        with self.lock:
            if self.waiting[master] >= SINK_QUEUE:
                self.dropped += 1
                return
            self.waiting[master] += 1
        self.q.put_nowait((master, line))

    def run(self) -> None:
        out = sys.stdout
        while True:
            item = self.q.get()
            self.q.task_done()
            if item is None:
                return
            if item == "\0reopen":
                if self.fh is not None:
                    self.fh.close()
                self._open()
                continue
            master, item = item
            with self.lock:
                self.waiting[master] -= 1
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                item = f"[pycluster] {dropped} log lines dropped (output too slow)\n" + item
            try:
                if self.fh is not None:
                    self.fh.write(item)
                else:
                    out.write(item)
                    out.flush()
            except (OSError, ValueError):
                pass

    def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until queued lines are written (before stdout goes away)."""
        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.001)  # the last item's write follows its task_done

    def close(self) -> None:
        try:
            self.q.put(None, timeout=1)
        except queue.Full:
            return
        self.join(timeout=2)
        if self.fh is not None:
            self.fh.close()


class LogBook:
    def __init__(self, log_file: str | None = None):
        self.ring: deque[dict] = deque(maxlen=RING)
        self.followers: set[Callable[[dict], None]] = set()
        self.sink = _Sink(log_file)
        self.sink.start()
        self._readers: dict[int, list] = {}

    def master(self, text: str) -> None:
        self._line(None, "master", text)

    def _line(self, worker_id: int | None, stream: str, text: str) -> None:
        entry = {"t": round(time.time(), 3), "worker": worker_id, "stream": stream, "line": text}
        self.ring.append(entry)
        prefix = f"[worker {worker_id}] " if worker_id is not None else "[pycluster] "
        self.sink.put(prefix + text + "\n", master=worker_id is None)
        for follower in list(self.followers):
            follower(entry)

    def attach(self, worker: Any, loop: Any, stderr_tail: deque) -> None:
        readers = []
        for stream, pipe in (("stdout", worker.stdout), ("stderr", worker.stderr)):
            if pipe is None:
                continue
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            state = {"buf": b"", "fd": fd, "pipe": pipe, "stream": stream,
                     "tail": stderr_tail if stream == "stderr" else None}
            loop.add_reader(fd, self._read, worker.id, stream, state, loop,
                            stderr_tail if stream == "stderr" else None)
            readers.append(state)
        self._readers[worker.id] = readers

    def _read(self, worker_id: int, stream: str, state: dict, loop: Any, tail: deque | None) -> None:
        try:
            data = os.read(state["fd"], READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if state["buf"]:
                self._emit(worker_id, stream, state["buf"], tail)
                state["buf"] = b""
            loop.remove_reader(state["fd"])
            state["pipe"].close()
            return
        buf = state["buf"] + data
        *lines, rest = buf.split(b"\n")
        for raw in lines:
            self._emit(worker_id, stream, raw, tail)
        if len(rest) > MAX_LINE:
            self._emit(worker_id, stream, rest, tail)
            rest = b""
        state["buf"] = rest

    def _emit(self, worker_id: int, stream: str, raw: bytes, tail: deque | None) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if tail is not None:
            tail.append(text)
        self._line(worker_id, stream, text)

    def detach(self, worker: Any) -> None:
        """The worker exited: drain what its pipes still hold, then close them."""
        for state in self._readers.pop(worker.id, []):
            pipe = state["pipe"]
            if pipe.closed:
                continue
            while True:
                try:
                    data = os.read(state["fd"], READ_SIZE)
                except OSError:
                    break
                if not data:
                    break
                state["buf"] += data
                if len(state["buf"]) > 4 * READ_SIZE:
                    break
            for raw in state["buf"].split(b"\n"):
                if raw:
                    self._emit(worker.id, state["stream"], raw, state["tail"])
            state["buf"] = b""

    def tail(self, lines: int) -> list[dict]:
        if lines <= 0:
            return []
        return list(self.ring)[-lines:]

    def flush(self) -> None:
        self.sink.flush()

    def reopen(self) -> None:
        try:
            self.sink.q.put_nowait("\0reopen")
        except queue.Full:
            pass

    def close(self) -> None:
        self.sink.close()
