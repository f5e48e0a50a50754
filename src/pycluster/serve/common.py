"""What the ASGI and WSGI servers share: the master's listeners, the drain flag, the access log."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .detect import UsageError


class Drain:
    """Set once the worker leaves rotation (SIGTERM); the servers watch it."""

    def __init__(self) -> None:
        self.active = False
        self.started = 0.0
        self._callbacks: list[Callable[[], None]] = []
        self.event = threading.Event()

    def on_start(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        if self.active:
            return
        self.active = True
        self.started = time.monotonic()
        # os.write: this may run in a signal handler, while the main thread holds stderr's buffer
        os.write(2, b"pycluster: draining: accepting no new connection; open ones end with Connection: close\n")
        self.event.set()
        for callback in self._callbacks:
            callback()

    def install(self) -> None:
        """SIGTERM (the master's, or pycluster's own after a disconnect) starts the drain;
        SIGQUIT ends the worker at once (gunicorn's quick shutdown)."""
        signal.signal(signal.SIGTERM, lambda _s, _f: self.start())
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def master_listeners(what: str) -> list[socket.socket]:
    """A socket for each of the master's stream listeners (rr lanes or shared sockets)."""
    import pycluster
    try:
        socks = pycluster.listeners()
    except OSError as exc:
        raise UsageError(f"serving {what} app needs the master's listeners: {exc.strerror or exc}"
                         " (give pycluster run at least one --bind)") from None
    streams = [s for s in socks if s.type == socket.SOCK_STREAM]
    for s in socks:
        if s.type != socket.SOCK_STREAM:
            s.close()
    if not streams:
        raise UsageError(f"serving {what} app needs a TCP or unix stream --bind; the master has none")
    return streams


def access_line(client: Any, method: str, path: str, query: str, protocol: str, status: int | str,
                seconds: float) -> None:
    """One access-log line: client, request line, status, duration (SPEC 8)."""
    if isinstance(client, (tuple, list)) and len(client) >= 2:
        who = f"{client[0]}:{client[1]}"
    else:
        who = str(client or "-")
    target = f"{path}?{query}" if query else path
    sys.stdout.write(f'{who} "{method} {target} {protocol}" {status} {seconds * 1000:.1f}ms\n')
    sys.stdout.flush()
