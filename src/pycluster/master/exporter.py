"""``--metrics ADDR``: what the master's HTTP endpoint answers (``httpd`` serves it).

``/healthz``: 200 while the master runs. ``/readyz``: 200 when every wanted
worker is ready (``status --check``'s judgement), else 503 with the reason.
``/metrics``: the cluster's ``pycluster_*`` metrics, then the apps' merged
``prometheus_client`` metrics (``metrics.py``).
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from typing import Any

from ..control.commands.status import check
from ..core import stats
from ..errors import EXIT_OK
from ..ipc.messages import APP_METRICS_FD
from . import httpd, metrics
from . import status as status_reply
from .slots import slot_state

PUSH_PERIOD = 0.1  # seconds between checks of an app's samples in each worker (child/metrics.py)
LINE_MAX = 4 * 1024 * 1024  # bytes: a longer line of samples is dropped (and the socket with it)
READ_MAX = 4 * 1024 * 1024  # bytes taken from one worker per wake-up: the loop serves the others between


def _no_sample(_pid: int) -> tuple[None, None]:
    return None, None


class Exporter:
    """The endpoint's routes over the arbiter's state, and the apps' samples."""

    def __init__(self, arbiter: Any):
        self.arbiter = arbiter
        self.app = metrics.AppMetrics()
        self.sock: socket.socket | None = None
        self.endpoint: httpd.HttpEndpoint | None = None
        self.feeds: dict[int, tuple[socket.socket, bytearray]] = {}  # worker id -> its metrics socket
        self.unattached: list[Any] = []  # forked before the loop ran

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
        waiting, self.unattached = self.unattached, []
        for worker in waiting:
            self.attach(worker)

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()
        elif self.sock is not None:
            self.sock.close()

    # -- the apps' samples: each worker's stdio[3] (the fork event), read to its exit --
    def attach(self, worker: Any) -> None:
        """Read the samples ``worker`` writes on its metrics socket (JSON lines) from the loop."""
        stdio = getattr(worker, "stdio", [])
        sock = stdio[APP_METRICS_FD] if len(stdio) > APP_METRICS_FD else None
        if sock is None or self.sock is None or worker.id in self.feeds:
            return
        loop = self.arbiter.loop
        if loop is None or self.endpoint is None:
            self.unattached.append(worker)
            return
        sock.setblocking(False)
        self.feeds[worker.id] = (sock, bytearray())
        loop.add_reader(sock.fileno(), self._readable, worker)

    def _readable(self, worker: Any) -> bool:
        """Take what ``worker`` wrote (never blocks); False once its socket is closed."""
        feed = self.feeds.get(worker.id)
        if feed is None:
            return False
        sock, buf = feed
        taken = 0
        while taken < READ_MAX:  # a worker that writes without pause cannot hold the loop
            try:
                data = sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._detach(worker.id)
                return False
            buf += data
            taken += len(data)
            end = buf.rfind(b"\n")
            if end >= 0:  # each line is a whole snapshot: the last one is enough
                start = buf.rfind(b"\n", 0, end) + 1
                try:
                    families = json.loads(bytes(buf[start:end]))
                except ValueError:
                    families = None
                del buf[:end + 1]
                if families is not None:
                    self.received(worker, families)
            if len(buf) > LINE_MAX:
                self.arbiter.logs.master(f"worker {worker.id}: a line of metrics over {LINE_MAX} bytes; ignored")
                self._detach(worker.id)
                return False
        return True

    def _detach(self, worker_id: int) -> None:
        feed = self.feeds.pop(worker_id, None)
        if feed is not None:
            loop = self.arbiter.loop
            if loop is not None:
                loop.remove_reader(feed[0].fileno())
            feed[0].close()

    def received(self, worker: Any, families: Any) -> None:
        self.app.update(worker.id, families)

    def gone(self, worker: Any) -> None:
        """``worker`` exited: what it wrote last is read, then its counts join the retired totals."""
        for _ in range(LINE_MAX // READ_MAX + 1):  # its last line, up to LINE_MAX, is read whole
            if not self._readable(worker):
                break
        else:  # still open: a process it forked holds the other end
            self._detach(worker.id)
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
        ports = {h.address.port for h in listeners if isinstance(getattr(h.address, "port", None), int)}
        cpu, rss, conns, handed = [], [], [], []
        pids = [slot.worker.pid for slot in slots if slot.worker is not None and slot.worker.pid is not None]
        open_now = stats.open_connections(pids, ports) if ports else {}
        for slot in slots:
            worker = slot.worker
            if worker is None or worker.pid is None:
                continue
            label = {"worker": str(worker.id)}
            used = stats.usage(worker.pid)
            if used is not None:
                cpu.append((label, used[0]))
                rss.append((label, float(used[1])))
            if worker.pid in open_now:
                conns.append((label, float(open_now[worker.pid])))
            known = [c for c in (h.connections(worker) for h in listeners if h.mode == "rr") if c is not None]
            if known:
                handed.append((label, float(sum(known))))
        rr = [h for h in listeners if h.mode == "rr"]
        handoffs = sum(getattr(h, "handoffs", 0) for h in rr)
        stalled = sum(getattr(h, "reclaimed_stalled", 0) for h in rr)
        gone = sum(getattr(h, "reclaimed_gone", 0) for h in rr)
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
            fam("pycluster_worker_connections", "gauge",
                "Established TCP connections of each live worker on the cluster's listening ports.", conns),
            fam("pycluster_worker_handoffs", "counter", "Connections the master handed to each live worker (rr).",
                handed),
            fam("pycluster_handoffs", "counter", "Connections the master handed to a worker, by policy.",
                [({"policy": "rr"}, float(handoffs))]),
            fam("pycluster_handoffs_reclaimed", "counter",
                "Hand-offs taken back from a worker: one that left them waiting for handoff_timeout (stalled)"
                " or that left or died (gone).",
                [({"policy": "rr", "reason": "stalled"}, float(stalled)),
                 ({"policy": "rr", "reason": "gone"}, float(gone))]),
        ]
