"""The app's own metrics, sent to the master (the worker side of ``--metrics``).

An app that uses ``prometheus_client`` as in a single process (its default
``REGISTRY``) has its samples collected on the channel thread and pushed to
the master, which merges every worker's (``master/metrics.py``). Pushed, not
pulled: every ``period`` seconds the registry is collected and, when a sample
of the app changed (or ``REFRESH`` seconds passed, for the process and GC
metrics), written as one JSON line on the worker's metrics socket (its
``stdio[3]``, a socketpair the master reads on its loop), and once more as the
worker exits. Not on the IPC channel: that one closes at a disconnect, and a
worker leaving in a reload or a stop still answers the requests it accepted;
the metrics socket stays open until the process ends, so those count too. So
the master always holds what a worker counted up to ``period`` ago, all of it
after a clean exit, and a worker killed with SIGKILL loses at most its last
``period`` of increments.

Never blocking: the socket is non-blocking; a line the master has not taken
yet waits in ``_pending`` (no newer snapshot is made meanwhile: each one
replaces the last). At exit the rest is written within ``EXIT_FLUSH`` seconds.

Cheap when unused: ``prometheus_client`` is never imported here; until the app
imported it, a tick is one dictionary lookup.
"""

from __future__ import annotations

import atexit
import json
import math
import select
import socket
import sys
import threading
import time
from typing import Any

from .loop import MiniLoop

REFRESH = 5.0  # seconds: the process_* and python_* samples are sent at least this often
EXIT_FLUSH = 2.0  # seconds an exiting worker may spend writing its last samples
_RUNTIME_PREFIXES = ("process_", "python_")


def _value(number: float) -> float | str:
    """A sample's value as JSON carries it (no NaN or infinities in our frames)."""
    return number if math.isfinite(number) else repr(number)  # 'inf', '-inf', 'nan'


def collect(registry: Any) -> list[list[Any]]:
    """[[name, type, help, [[sample name, labels, value], ...], gauge mode], ...]; ``_created``
    samples left out (a worker's start time: meaningless once merged). The gauge mode is
    what the app declared with ``Gauge(..., multiprocess_mode=...)`` ("" for other types):
    the master aggregates such gauges across workers instead of labelling them per worker."""
    modes = _gauge_modes(registry)
    families: list[list[Any]] = []
    for family in registry.collect():
        samples = [[s.name, dict(s.labels), _value(float(s.value))] for s in family.samples
                   if not s.name.endswith("_created")]
        families.append([family.name, family.type, family.documentation, samples, modes.get(family.name, "")])
    return families


def _gauge_modes(registry: Any) -> dict[str, str]:
    """Gauge name -> its multiprocess_mode, for the gauges the app declared one for."""
    modes: dict[str, str] = {}
    collectors = getattr(registry, "_collector_to_names", None)
    for collector in list(collectors or ()):
        mode = getattr(collector, "_multiprocess_mode", None)
        name = getattr(collector, "_name", None)
        if isinstance(mode, str) and isinstance(name, str) and getattr(collector, "_type", "") == "gauge":
            modes[name] = mode
    return modes


class MetricsPush:
    """Pushes the app's samples on ``sock`` (the worker's end of the metrics socketpair)."""

    def __init__(self, period: float, loop: MiniLoop, sock: socket.socket):
        self.period = max(period, 0.01)
        self._loop = loop
        self._sock = sock
        sock.setblocking(False)
        self._lock = threading.Lock()  # the channel thread's ticks and the exit's last push
        self._pending = b""
        self._last_app: list[Any] | None = None
        self._last_sent = 0.0
        self._failed = False
        self._closed = False

    def start(self) -> None:
        atexit.register(self.at_exit)
        self._loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            self.push()
        finally:
            self._loop.call_later(self.period, self._tick)

    def at_exit(self) -> None:
        """The process ends: the last samples (what the drain counted), written within EXIT_FLUSH."""
        with self._lock:
            if self._closed:
                return
            deadline = time.monotonic() + EXIT_FLUSH
            line = self._snapshot()
            if line:  # after a line still pending, if any: the master keeps the last
                self._pending += line
            while not self._flush():
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self._sock], [], left)[1]:
                    break
            self._closed = True
            self._sock.close()

    def push(self) -> bool:
        """Send the samples if the app's changed (or REFRESH passed); True when a line was queued."""
        with self._lock:
            if self._closed or not self._flush():
                return False  # the last line is still going out: no newer one until it has
            line = self._snapshot()
            if line is None:
                return False
            self._pending = line
            self._flush()
            return True

    def _flush(self) -> bool:
        """Write what is pending; True when nothing is left."""
        while self._pending:
            try:
                sent = self._sock.send(self._pending)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # the master is gone: nobody reads
                self._pending = b""
                self._closed = True
                return False
            self._pending = self._pending[sent:]
        return True

    def _snapshot(self) -> bytes | None:
        client = sys.modules.get("prometheus_client")
        registry = getattr(client, "REGISTRY", None)
        if registry is None:
            return None
        try:
            families = collect(registry)
        except Exception as exc:  # noqa: BLE001 - an app's collector failing must not end the channel thread
            if not self._failed:  # said once, not every period
                self._failed = True
                print(f"pycluster: cannot collect the app's metrics: {exc!r}", file=sys.stderr)
            return None
        self._failed = False
        app = [f for f in families if not f[0].startswith(_RUNTIME_PREFIXES)]
        now = time.monotonic()
        if app == self._last_app and now - self._last_sent < REFRESH:
            return None
        self._last_app = app
        self._last_sent = now
        return json.dumps(families, separators=(",", ":")).encode() + b"\n"
