"""The ``status`` reply (SPEC: control protocol), built from the arbiter's state.

Rendering is pure given its inputs: the process sampler (psutil, in
``core.stats``) and the clocks are parameters, so a test renders a fake
master's state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .slots import Slot, slot_state
from .watchdogs import memory_warning

Sampler = Callable[[int], tuple[float | None, int | None]]


class StatusConfig(Protocol):
    @property
    def policy(self) -> str: ...
    @property
    def app(self) -> str: ...
    @property
    def max_memory(self) -> int | None: ...


class StatusSource(Protocol):
    """What ``status`` reads of the arbiter."""

    name: str
    version: str
    state: str
    generation: int
    wanted: int
    started_at: float

    @property
    def cfg(self) -> Any: ...  # a StatusConfig (typed loosely: the arbiter's config is richer)
    @property
    def slots(self) -> Mapping[int, Slot]: ...


class Listener(Protocol):
    @property
    def address(self) -> Any: ...
    def connections(self, worker: Any) -> int | None: ...


def render(source: StatusSource, listeners: Iterable[Listener], *, sample: Sampler | None = None,
           now: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
           pid: int | None = None, app_listeners: Iterable[Listener] = ()) -> dict[str, Any]:
    """The status reply. ``listeners`` are the master's own (--bind);
    ``app_listeners`` the other addresses the workers listen on through the
    master (the app bound them itself), so a master without --bind still
    says where it serves."""
    if sample is None:
        from ..core import stats  # psutil: imported when a status is asked for
        sample = stats.sample
    listeners, app_listeners = list(listeners), list(app_listeners)
    cfg: StatusConfig = source.cfg
    workers = [_worker(source.slots[index], listeners + app_listeners, sample, monotonic(), cfg.max_memory)
               for index in sorted(source.slots)]
    return {
        "name": source.name, "pid": os.getpid() if pid is None else pid, "version": source.version,
        "state": source.state, "policy": cfg.policy, "generation": source.generation,
        "workers_wanted": source.wanted, "uptime_s": round(now() - source.started_at, 3), "target": cfg.app,
        "listeners": [listener_entry(h) for h in listeners],
        "app_listeners": [listener_entry(h) for h in app_listeners],
        "workers": workers,
    }


def _worker(slot: Slot, listeners: list[Listener], sample: Sampler, mono: float,
            max_memory: int | None) -> dict[str, Any]:
    worker = slot.worker
    pid = worker.pid if worker is not None else None
    cpu, rss = sample(pid) if pid else (None, None)
    conns = None
    if worker is not None:
        known = [c for c in (h.connections(worker) for h in listeners) if c is not None]
        conns = sum(known) if known else None
    return {
        "id": worker.id if worker is not None else None, "pid": pid,
        "generation": slot.generation, "state": slot_state(slot),
        "ready": worker is not None and slot.ready,
        "uptime_s": round(mono - slot.started, 3) if worker is not None else 0.0,
        "restarts": slot.restarts, "connections": conns, "cpu_percent": cpu, "rss_bytes": rss,
        "last_exit": slot.last_exit, "warning": memory_warning(slot, max_memory),
    }


def listener_entry(handle: Listener) -> dict[str, Any]:
    a = handle.address
    return {"address": a.address, "port": a.port, "address_type": a.address_type}
