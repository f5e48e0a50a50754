"""The master's log writer: a thread that owns the blocking writes (the
terminal, ``--log-file``) so the master's loop never waits on them. Its queue
is bounded: when it falls behind, workers' lines are dropped and counted, the
master's own lines have room of their own (logs.py feeds it). The thread
also formats each entry (``core.logline``: text or json), off the loop."""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from typing import Any

from ..core import logline

SINK_QUEUE = 10_000  # lines waiting for the writer thread (each of: workers', the master's own)
SINK_CHARS = 4 * 2 ** 20  # ... and their characters


def open_log(path: str, *, block: bool = True) -> int:
    """The log file, opened for appending (created 0666 & ~umask). ``block=False``
    (on the master's loop) fails at once on a FIFO nobody reads instead of waiting."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | (0 if block else os.O_NONBLOCK)
    fd = os.open(path, flags, 0o666)
    os.set_blocking(fd, True)  # the writer thread's writes block; the loop never does them
    return fd


class Sink(threading.Thread):
    """Owns blocking writes (terminal, log file) so the loop never waits on them.

    It never dies of an I/O error: a failed write loses its line (counted, and
    said on stderr once per run of failures and in the output once it works
    again); the next line tries again."""

    def __init__(self, log_file: str | None, log_format: str = "text", pid: int | None = None):
        super().__init__(name="pycluster-log-writer", daemon=True)
        # Unbounded queue, bounded by us: workers' lines beyond SINK_QUEUE / SINK_CHARS
        # waiting are dropped (and counted); the master's own lines (a few per event)
        # get room of their own, so "ready" and "scale" lines survive a flood.
        self.q: queue.Queue[Any] = queue.Queue()
        self.waiting = {False: 0, True: 0}  # lines queued, by "is the master's own"
        self.chars = {False: 0, True: 0}
        self.lock = threading.Lock()
        self.log_file = log_file
        self.fd: int | None = open_log(log_file) if log_file else None
        self.dropped = 0
        self.dropped_total = 0  # since start (the metric pycluster_log_lines_dropped_total)
        self.lost = 0  # lines whose write failed
        self.lost_reason = ""
        self.render = logline.RENDER[log_format]
        self.pid = os.getpid() if pid is None else pid

    def put(self, entry: dict[str, Any], master: bool = False) -> None:
        """Queue one entry (formatted by the writer thread, so the loop only counts)."""
        size = len(entry["line"])
        with self.lock:
            if self.waiting[master] >= SINK_QUEUE or self.chars[master] + size > SINK_CHARS:
                self.dropped += 1
                self.dropped_total += 1
                return
            self.waiting[master] += 1
            self.chars[master] += size
        self.q.put_nowait(("line", master, entry))

    def swap(self, fd: int) -> None:
        """Write to ``fd`` from the next line on (a reopened log file); the old one is closed."""
        self.q.put_nowait(("swap", fd))

    def run(self) -> None:
        while True:
            item = self.q.get()
            try:
                if item is None:
                    return
                if item[0] == "swap":
                    old, self.fd = self.fd, item[1]
                    if old is not None:
                        _close(old)
                    continue
                _kind, master, entry = item
                with self.lock:
                    self.waiting[master] -= 1
                    self.chars[master] -= len(entry["line"])
                # One write(2) per line, as before timestamps: the write releases the GIL, so
                # a flood's writer leaves the loop its share (batching lines measured 2x the
                # loop's latency under a 100 MB flood: the writer then formats more, holding it).
                self._write(self.render(entry) + "\n")
            except Exception as exc:  # noqa: BLE001 - the writer must outlive anything
                self._failed(f"log writer: {type(exc).__name__}: {exc}")
            finally:
                self.q.task_done()

    def _write(self, line: str) -> None:
        notes = ""
        if self.lost:
            notes += self._note(f"{self.lost} log lines lost: {self.lost_reason}")
        if self.dropped:
            with self.lock:
                dropped, self.dropped = self.dropped, 0
            notes += self._note(f"{dropped} log lines dropped (output too slow)")
        fd = self.fd if self.fd is not None else _stdout_fd()
        if fd is None:
            return
        try:
            _write_all(fd, (notes + line).encode("utf-8", "replace"))
        except OSError as exc:
            what = f"the log file {self.log_file}" if self.fd is not None else "stdout"
            self._failed(f"cannot write {what}: {exc.strerror or exc}")
            return
        self.lost = 0

    def _note(self, text: str) -> str:
        """The writer's own line, formatted as the master's are."""
        return self.render({"t": time.time(), "worker": None, "pid": self.pid, "stream": "master",
                            "line": text}) + "\n"

    def _failed(self, reason: str) -> None:
        if not self.lost:  # the first of a run of failures: say it where someone may look
            try:
                _write_all(2, f"pycluster: {reason}; log lines are lost until it works again\n".encode())
            except OSError:
                pass
        self.lost += 1
        self.lost_reason = reason

    def flush(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until queued lines are written (before stdout goes away)."""
        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self) -> None:
        self.q.put(None)
        self.join(timeout=2)
        if not self.is_alive() and self.fd is not None:
            _close(self.fd)
            self.fd = None


def _stdout_fd() -> int | None:
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # an inherited non-blocking stdout: this thread may wait
            select.select([], [fd], [])
            continue
        view = view[n:]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
