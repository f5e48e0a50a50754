"""sd_notify: READY / RELOADING / STOPPING / STATUS / WATCHDOG over NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from ...core.common import plural

SD_LISTEN_FDS_START = 3


def activation_fds(environ: dict[str, str] | None = None) -> list[int]:
    """The listening sockets systemd passed us (LISTEN_FDS / LISTEN_PID),
    removed from the environment so workers never see them."""
    env = os.environ if environ is None else environ
    count, pid = env.pop("LISTEN_FDS", None), env.pop("LISTEN_PID", None)
    env.pop("LISTEN_FDNAMES", None)
    if not count or not pid or not count.isdigit() or not pid.isdigit() or int(pid) != os.getpid():
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


class Notifier:
    def __init__(self, address: str):
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Non-blocking: a reader that stalls (its queue full) would otherwise
        # block the master's loop in sendto, and serving and control with it.
        self.sock.setblocking(False)
        self.watchdog: float | None = None
        self.dropped = 0  # notifications we could not send (logged once)
        self.log: Any = None  # the master's log (a callable taking one line), set by the hooks

    @classmethod
    def from_environ(cls) -> Notifier | None:
        address = os.environ.pop("NOTIFY_SOCKET", None)
        if not address:
            return None
        notifier = cls(address)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        os.environ.pop("WATCHDOG_PID", None)
        if usec and usec.isdigit() and int(usec) > 0:
            notifier.watchdog = int(usec) / 1e6
        return notifier

    def send(self, *lines: str) -> bool:
        """Send one notification without ever waiting; False if it was dropped."""
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            self.dropped += 1
            if self.dropped == 1 and self.log is not None:
                self.log(f"sd_notify: {lines[0]} to {self.address.lstrip(chr(0))!r} dropped ({exc.strerror or exc});"
                         f" later notifications that cannot be sent are dropped silently (counted)")
            return False

    def _hook(self, arbiter: Any) -> None:
        logs = getattr(arbiter, "logs", None)
        if self.log is None and logs is not None:
            self.log = logs.master

    def ready(self, arbiter: Any) -> None:
        self._hook(arbiter)
        n = sum(1 for s in arbiter.slots.values() if s.ready)
        self.send("READY=1", f"STATUS=generation {arbiter.generation}: {plural(n, 'worker')} ready",
                  f"MAINPID={os.getpid()}")
        if self.watchdog and not getattr(self, "_beating", False):
            self._beating = True
            self._beat(arbiter)

    def _beat(self, arbiter: Any) -> None:
        if arbiter.state == "stopping":
            return
        self.send("WATCHDOG=1")
        if self.watchdog is not None:
            arbiter.loop.call_later(self.watchdog / 2, self._beat, arbiter)

    def reloading(self, arbiter: Any) -> None:
        self._hook(arbiter)
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self, arbiter: Any) -> None:
        self._hook(arbiter)
        self.send("STOPPING=1", "STATUS=stopping")
        if self.dropped and self.log is not None:
            self.log(f"sd_notify: {self.dropped} notifications dropped in all")
