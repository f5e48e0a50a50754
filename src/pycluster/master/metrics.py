"""``--metrics``: the Prometheus text (format 0.0.4) the master serves on ``/metrics``.

Two parts, both rendered by hand (no dependency in the master):

* the cluster's own metrics (``pycluster_*``): workers by state, wanted
  workers, restarts by cause, reloads by outcome, dropped log lines, each
  worker's CPU seconds, RSS and open connections (:func:`cluster_families`);
* the apps' ``prometheus_client`` metrics, which every worker pushes
  (``child/metrics.py``) and :class:`AppMetrics` merges: counters, histograms
  and summaries are summed across workers, and what a dead or replaced
  worker had counted is kept in a *retired* total, so a sum never goes
  backwards across crashes, kills and reloads; gauges (and every other type)
  and the ``process_*`` / ``python_*`` runtime metrics are kept per worker
  with a ``worker="N"`` label, while that worker lives.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]
CUMULATIVE = frozenset({"counter", "histogram", "summary"})
RUNTIME_PREFIXES = ("process_", "python_")
GHOSTS = 256  # dead workers whose late samples are still accounted for
# prometheus_client's family types -> the text format's (and the suffix of a counter's TYPE name)
_TEXT_TYPE = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
              "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


RESTART_CAUSES = ("crash", "heartbeat", "memory", "reload")

# What a worker may send (a worker is untrusted): names the text format allows, so a
# sample can never break the exposition or add lines of its own, and never a
# pycluster_* family, which is the master's to say. Bounded, so one worker cannot
# make every scrape slow.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
MAX_SAMPLES = 20_000  # per worker and snapshot; the rest is dropped


class ClusterCounts:
    """What the master counts as it decides (kept with or without ``--metrics``):
    worker restarts by cause, reloads by outcome."""

    def __init__(self) -> None:
        self.restarts = dict.fromkeys(RESTART_CAUSES, 0)
        self.reloads = {"ok": 0, "failed": 0}

    def restarted(self, cause: str) -> None:
        self.restarts[cause] = self.restarts.get(cause, 0) + 1

    def reloaded(self, ok: bool) -> None:
        self.reloads["ok" if ok else "failed"] += 1


class Family:
    """One metric family: its type, help and samples (name, labels) -> value, in order."""

    __slots__ = ("name", "type", "help", "samples")

    def __init__(self, name: str, type: str, help: str):
        self.name = name
        self.type = type
        self.help = help
        self.samples: dict[SampleKey, float] = {}

    def add(self, sample: str, labels: Mapping[str, str], value: float) -> None:
        key = (sample, tuple(sorted(labels.items())))
        self.samples[key] = self.samples.get(key, 0.0) + value


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _decode(families: Any) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]], str]]:
    """A worker's message, checked: [(name, type, help, [(sample, labels, value)], gauge mode)]."""
    out = []
    budget = MAX_SAMPLES
    for entry in families if isinstance(families, list) else ():
        if not (isinstance(entry, list) and len(entry) in (4, 5) and isinstance(entry[0], str)
                and isinstance(entry[3], list) and entry[1] in _TEXT_TYPE):
            continue
        name, mtype, mhelp, raw = entry[:4]
        if not _METRIC_NAME.match(name) or name.startswith("pycluster_"):
            continue
        samples = [(s[0], {str(k): str(v) for k, v in s[1].items()}, _float(s[2])) for s in raw[:budget]
                   if isinstance(s, list) and len(s) == 3 and isinstance(s[0], str) and isinstance(s[1], dict)
                   and s[0].startswith(name) and _METRIC_NAME.match(s[0])
                   and all(isinstance(k, str) and _LABEL_NAME.match(k) for k in s[1])]
        budget -= len(samples)
        mode = entry[4] if len(entry) == 5 and isinstance(entry[4], str) else ""
        out.append((name, str(mtype), str(mhelp), samples, mode))
        if budget <= 0:
            break
    return out


# A gauge's multiprocess_mode (prometheus_client) -> how the workers' values combine into one
# sample. Only live workers count (a dead worker's gauge is gone, as "live*" modes say);
# "all" and "liveall" (the default) keep one sample per worker, labelled worker="ID".
GAUGE_MERGE: dict[str, Any] = {
    "sum": sum, "livesum": sum, "max": max, "livemax": max, "min": min, "livemin": min,
    "mostrecent": None, "livemostrecent": None,  # the worker that pushed last
}


def cumulative(name: str, mtype: str) -> bool:
    return mtype in CUMULATIVE and not name.startswith(RUNTIME_PREFIXES)


class AppMetrics:
    """The workers' latest samples and the retired totals of the dead ones."""

    def __init__(self) -> None:
        self.live: dict[int, list[Any]] = {}  # worker id -> its last families (decoded)
        self.retired: dict[str, Family] = {}  # cumulative families: what dead workers had counted
        self.ghosts: OrderedDict[int, list[Any]] = OrderedDict()  # dead workers: their last families

    def update(self, worker_id: int, families: Any) -> None:
        decoded = _decode(families)
        ghost = self.ghosts.get(worker_id)
        if ghost is not None:  # sent just before it died, read after its exit: count the difference
            self._retire(decoded, sign=1.0)
            self._retire(ghost, sign=-1.0)
            self.ghosts[worker_id] = decoded
            return
        self.live.pop(worker_id, None)
        self.live[worker_id] = decoded  # in push order: the last one is the most recent

    def retire(self, worker_id: int) -> None:
        """The worker is gone: its counts join the retired totals."""
        families = self.live.pop(worker_id, [])  # none yet: a push still in flight counts in full
        self._retire(families, sign=1.0)
        self.ghosts[worker_id] = families
        while len(self.ghosts) > GHOSTS:
            self.ghosts.popitem(last=False)

    def _retire(self, families: list[Any], sign: float) -> None:
        for name, mtype, mhelp, samples, *_mode in families:
            if not cumulative(name, mtype):
                continue
            family = self.retired.get(name)
            if family is None or family.type != mtype:
                family = self.retired[name] = Family(name, mtype, mhelp)
            for sample, labels, value in samples:
                family.add(sample, labels, sign * value)

    def merged(self) -> list[Family]:
        out: dict[str, Family] = {}
        for name, old in self.retired.items():
            family = out[name] = Family(name, old.type, old.help)
            family.samples = dict(old.samples)
        combined: dict[str, dict[SampleKey, list[float]]] = {}  # aggregated gauges: values in push order
        for worker_id in self.live:
            for name, mtype, mhelp, samples, mode in self.live[worker_id]:
                found = out.get(name)
                if found is None or found.type != mtype:
                    found = out[name] = Family(name, mtype, mhelp)
                family = found
                if mtype == "gauge" and mode in GAUGE_MERGE:
                    values = combined.setdefault(name, {})
                    for sample, labels, value in samples:
                        values.setdefault((sample, tuple(sorted(labels.items()))), []).append(value)
                    continue
                per_worker = not cumulative(name, mtype)
                for sample, labels, value in samples:
                    if per_worker and "worker" not in labels:
                        labels = {**labels, "worker": str(worker_id)}
                    family.add(sample, labels, value)
        for name, values in combined.items():
            mode = next(m for fams in self.live.values() for n, _t, _h, _s, m in fams if n == name)
            merge = GAUGE_MERGE[mode]
            for key, seen in values.items():
                out[name].samples[key] = seen[-1] if merge is None else merge(seen)
        return list(out.values())


# -- the text format --------------------------------------------------------------------------

def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        mtype = _TEXT_TYPE.get(family.type, "untyped")
        mname = family.name + ("_total" if family.type == "counter" else "_info" if family.type == "info" else "")
        lines.append(f"# HELP {mname} {family.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}")
        lines.append(f"# TYPE {mname} {mtype}")
        for (sample, labels), value in family.samples.items():
            shown = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{shown}}} {_number(value)}" if shown else f"{sample} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def family(name: str, mtype: str, help: str, samples: Iterable[tuple[Mapping[str, str], float]],
           sample_name: str | None = None) -> Family:
    """A cluster family from (labels, value) pairs (``sample_name``: the samples' name, e.g. NAME_total)."""
    out = Family(name, mtype, help)
    shown = sample_name or (name + "_total" if mtype == "counter" else name)
    for labels, value in samples:
        out.add(shown, labels, value)
    return out
