"""``--metrics ADDR``: what the master's HTTP endpoint answers (``httpd`` serves it).

``/healthz``: 200 while the master runs. ``/readyz``: 200 when every wanted
worker is ready (``status --check``'s judgement), else 503 with the reason.
``/metrics``: the cluster's ``pycluster_*`` metrics, then the apps' merged
``prometheus_client`` metrics (``metrics.py``).
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from ..control.commands.status import check
from ..core import stats
from ..errors import EXIT_OK
from . import httpd, metrics
from . import status as status_reply
from .slots import slot_state

PUSH_PERIOD = 0.1  # seconds between checks of an app's samples in each worker (child/metrics.py)


def _no_sample(_pid: int) -> tuple[None, None]:
    return None, None


class Exporter:
    """The endpoint's routes over the arbiter's state, and the apps' samples."""

    def __init__(self, arbiter: Any):
        self.arbiter = arbiter
        self.app = metrics.AppMetrics()
        self.sock: socket.socket | None = None
        self.endpoint: httpd.HttpEndpoint | None = None

    def listen(self) -> None:
        """Bind ``--metrics`` (before any fork; OSError naming the address)."""
        if self.arbiter.cfg.metrics:
            self.sock = httpd.listen(self.arbiter.cfg.metrics)

    async def start(self) -> None:
        if self.sock is None:
            return
        routes: dict[str, httpd.Route] = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.scrape}
        self.endpoint = httpd.HttpEndpoint(self.sock, routes, self.arbiter.logs.master)
        await self.endpoint.start()

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()
        elif self.sock is not None:
            self.sock.close()

    # -- the apps' samples (the engine's internal:metrics event, the exit event) --
    def received(self, worker: Any, families: Any) -> None:
        self.app.update(worker.id, families)

    def gone(self, worker: Any) -> None:
        self.app.retire(worker.id)

    # -- routes -----------------------------------------------------------------
    def healthz(self) -> tuple[int, str]:
        return 200, f"{self.arbiter.name}: {self.arbiter.state}\n"

    def readyz(self) -> tuple[int, str]:
        arbiter = self.arbiter
        code, line = check(status_reply.render(arbiter, arbiter.engine.master_listeners, sample=_no_sample))
        return (200 if code == EXIT_OK else 503), line + "\n"

    def scrape(self) -> tuple[int, str]:
        return 200, metrics.render(self.cluster_families() + self.app.merged())

    def cluster_families(self) -> list[metrics.Family]:
        arbiter = self.arbiter
        counts: metrics.ClusterCounts = arbiter.counts
        slots = [arbiter.slots[i] for i in sorted(arbiter.slots)]
        states = Counter(slot_state(slot) for slot in slots)
        listeners = list(arbiter.engine.master_listeners)
        cpu, rss, conns = [], [], []
        for slot in slots:
            worker = slot.worker
            if worker is None or worker.pid is None:
                continue
            label = {"worker": str(worker.id)}
            used = stats.usage(worker.pid)
            if used is not None:
                cpu.append((label, used[0]))
                rss.append((label, float(used[1])))
            known = [c for c in (h.connections(worker) for h in listeners) if c is not None]
            if known:
                conns.append((label, float(sum(known))))
        fam = metrics.family
        return [
            fam("pycluster_workers", "gauge", "Workers by state (as `pycluster status` shows them).",
                [({"state": state}, float(n)) for state, n in sorted(states.items())]),
            fam("pycluster_workers_wanted", "gauge", "Workers the master keeps running.",
                [({}, float(arbiter.wanted))]),
            fam("pycluster_generation", "gauge", "The code generation serving (a reload adds one).",
                [({}, float(arbiter.generation))]),
            fam("pycluster_worker_restarts", "counter", "Workers replaced, by cause.",
                [({"cause": cause}, float(n)) for cause, n in counts.restarts.items()]),
            fam("pycluster_reloads", "counter", "Rolling reloads, by outcome.",
                [({"outcome": outcome}, float(n)) for outcome, n in counts.reloads.items()]),
            fam("pycluster_log_lines_dropped", "counter", "Worker log lines dropped because the output was too slow.",
                [({}, float(arbiter.logs.sink.dropped_total))]),
            fam("pycluster_worker_cpu_seconds", "counter", "CPU seconds (user and system) of each live worker.", cpu),
            fam("pycluster_worker_rss_bytes", "gauge", "Resident memory of each live worker.", rss),
            fam("pycluster_worker_connections", "gauge", "Open connections of each live worker (rr policy).", conns),
        ]
