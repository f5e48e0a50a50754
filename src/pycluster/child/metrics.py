"""The app's own metrics, sent to the master (the worker side of ``--metrics``).

An app that uses ``prometheus_client`` as in a single process (its default
``REGISTRY``) has its samples collected on the channel thread and pushed to
the master, which merges every worker's (``master/metrics.py``). Pushed, not
pulled: every ``period`` seconds the registry is collected and, when a sample
of the app changed (or ``REFRESH`` seconds passed, for the process and GC
metrics), sent as one ``metrics`` message. So the master always holds what a
worker counted up to ``period`` ago, and a worker killed with SIGKILL loses at
most its last ``period`` of increments.

Cheap when unused: ``prometheus_client`` is never imported here; until the app
imported it, a tick is one dictionary lookup.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ..ipc.channel import KIND_INTERNAL, Channel
from ..ipc.messages import ACT, METRICS
from .loop import MiniLoop

REFRESH = 5.0  # seconds: the process_* and python_* samples are sent at least this often
_RUNTIME_PREFIXES = ("process_", "python_")


def _value(number: float) -> float | str:
    """A sample's value as JSON carries it (no NaN or infinities in our frames)."""
    return number if math.isfinite(number) else repr(number)  # 'inf', '-inf', 'nan'


def collect(registry: Any) -> list[list[Any]]:
    """[[name, type, help, [[sample name, labels, value], ...]], ...]; ``_created`` samples left out
    (a worker's start time: meaningless once merged)."""
    families: list[list[Any]] = []
    for family in registry.collect():
        samples = [[s.name, dict(s.labels), _value(float(s.value))] for s in family.samples
                   if not s.name.endswith("_created")]
        families.append([family.name, family.type, family.documentation, samples])
    return families


class MetricsPush:
    def __init__(self, period: float, loop: MiniLoop, channel: Channel):
        self.period = max(period, 0.01)
        self._loop = loop
        self._channel = channel
        self._last_app: list[Any] | None = None
        self._last_sent = 0.0
        self._failed = False

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        if self._channel.closed:
            return
        try:
            self.push()
        finally:
            self._loop.call_later(self.period, self._tick)

    def push(self) -> bool:
        """Send the samples if the app's changed (or REFRESH passed); True when sent."""
        client = sys.modules.get("prometheus_client")
        registry = getattr(client, "REGISTRY", None)
        if registry is None:
            return False
        try:
            families = collect(registry)
        except Exception as exc:  # noqa: BLE001 - an app's collector failing must not end the channel thread
            if not self._failed:  # said once, not every period
                self._failed = True
                print(f"pycluster: cannot collect the app's metrics: {exc!r}", file=sys.stderr)
            return False
        self._failed = False
        app = [f for f in families if not f[0].startswith(_RUNTIME_PREFIXES)]
        now = time.monotonic()
        if app == self._last_app and now - self._last_sent < REFRESH:
            return False
        self._last_app = app
        self._last_sent = now
        self._channel.send(KIND_INTERNAL, {ACT: METRICS, "families": families})
        return True
