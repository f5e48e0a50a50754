"""`pycluster top` / `status --watch`: poll the master once a second, redraw, read keys in between.

One thread: select() on stdin with the time left to the next poll is the
tick, so a key never waits for a redraw and a redraw never waits for a key.
The terminal is in cbreak mode (keys without Enter, no echo, Ctrl-C still a
signal) only inside ``run_live``, and gets its modes back however it ends.
Rendering is view.py's; this module only does the I/O.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.live import Live

from ..control.client import NoMaster, request
from . import view
from .history import History

TICK_S = 1.0
LOG_LINES = 8
ACTIONS = {"r": {"cmd": "reload", "wait": False}, "+": {"cmd": "scale", "delta": 1},
           "=": {"cmd": "scale", "delta": 1}, "-": {"cmd": "scale", "delta": -1}}
QUIT = ("q", "Q")
# A master that does not answer is the same thing to the view as no master at all.
UNREACHABLE = (NoMaster, OSError, ValueError, KeyError, TypeError)


@contextmanager
def cbreak(stream: Any) -> Iterator[int | None]:
    """The stream's fd in cbreak mode (None when it is not a terminal: no keys then)."""
    try:
        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (AttributeError, OSError, ValueError, termios.error):
        yield None
        return
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_keys(fd: int | None, timeout: float) -> str:
    """The keys typed within ``timeout`` seconds ('' when none); EOFError when the terminal is gone."""
    if fd is None:
        time.sleep(max(0.0, timeout))
        return ""
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not ready:
        return ""
    data = os.read(fd, 64)
    if not data:
        raise EOFError
    return data.decode("utf-8", "replace")


def act(path: str, cmd: dict[str, Any]) -> str:
    """Send a key's command; the line the footer shows about it."""
    try:
        reply = request(path, cmd, timeout=5.0)
    except UNREACHABLE:
        return f"{cmd['cmd']}: no master answers"
    if not reply.get("ok"):
        return f"{cmd['cmd']} refused: {(reply.get('error') or {}).get('message', 'failed')}"
    result = reply.get("result") or {}
    if cmd["cmd"] == "reload":
        return f"reload to generation {result.get('generation')} started"
    return f"workers: {result.get('was')} -> {result.get('workers_wanted')}"


class Poller:
    """Asks the master for status and log lines; remembers what it needs to draw the next frame."""

    def __init__(self, path: str):
        self.path = path
        self.history = History()
        self.answered: float | None = None  # monotonic time of the last answer

    def frame(self, size: Any, notice: str) -> Any:
        try:
            status = request(self.path, {"cmd": "status"}, timeout=2.0)["result"]
            logs = request(self.path, {"cmd": "logs", "lines": LOG_LINES}, timeout=2.0)["result"]["lines"]
        except UNREACHABLE:
            since = None if self.answered is None else time.monotonic() - self.answered
            return view.no_master(self.path, notice, since)
        self.answered = time.monotonic()
        self.history.update(status, self.answered)
        return view.dashboard(status, self.history, logs, width=size.width, height=size.height, notice=notice)


def run_live(path: str, console: Any) -> int:
    poller, notice = Poller(path), ""
    try:
        with cbreak(sys.stdin) as fd, Live(console=console, screen=console.is_terminal, auto_refresh=False,
                                           redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                live.update(poller.frame(console.size, notice), refresh=True)
                deadline = time.monotonic() + TICK_S
                while (left := deadline - time.monotonic()) > 0:
                    keys = read_keys(fd, left)
                    if any(k in QUIT for k in keys):
                        return 0
                    commands = [ACTIONS[k] for k in keys if k in ACTIONS]
                    if commands:
                        notice = "; ".join(act(path, cmd) for cmd in commands)
                        break  # show the effect now, not at the next tick
    except (KeyboardInterrupt, EOFError):
        return 0
