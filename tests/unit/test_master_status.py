"""Unit tests of the ``status`` reply (pycluster.master.status), rendered from a fake master's
state with a fake sampler and clocks. No processes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pycluster.core.worker import Address, WorkerState
from pycluster.master import status
from pycluster.master.slots import Slot

pytestmark = pytest.mark.timeout(60)

MiB = 2 ** 20


class Listener:
    def __init__(self, address, counts):
        self.address = address
        self.counts = counts  # worker id -> connections (missing: not known)

    def connections(self, worker):
        return self.counts.get(worker.id)


def slot(index, worker=None, **fields):
    s = Slot(index)
    s.worker = worker
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def fake_master(slots, max_memory=None):
    return SimpleNamespace(
        name="app", version="9.9", state="running", generation=2, wanted=len(slots), started_at=1000.0,
        cfg=SimpleNamespace(policy="rr", app="app:main", max_memory=max_memory),
        slots={s.index: s for s in slots})


def render(master, listeners):
    samples = {124: (3.0, 21_000_000), 125: (None, None)}
    return status.render(master, listeners, sample=lambda pid: samples[pid], now=lambda: 1012.5,
                         monotonic=lambda: 500.0, pid=123)


def test_status_renders_the_spec_shape():
    w1 = SimpleNamespace(id=1, pid=124, state=WorkerState.LISTENING)
    w2 = SimpleNamespace(id=2, pid=125, state=WorkerState.ONLINE)
    last = {"code": 1, "signal": None, "at": 990.0}
    master = fake_master([slot(2, w2, generation=2, started=499.0, restarts=1, fails=2, last_exit=last),
                          slot(1, w1, generation=1, started=487.7, ready=True)])
    listeners = [Listener(Address(address="127.0.0.1", port=8000, address_type=4), {1: 5000}),
                 Listener(Address(address="/run/a.sock", port=None, address_type=-1), {1: 12})]
    result = render(master, listeners)
    assert json.loads(json.dumps(result)) == result  # plain JSON
    assert {k: v for k, v in result.items() if k != "workers"} == {
        "name": "app", "pid": 123, "version": "9.9", "state": "running", "policy": "rr", "generation": 2,
        "workers_wanted": 2, "uptime_s": 12.5, "target": "app:main",
        "listeners": [{"address": "127.0.0.1", "port": 8000, "address_type": 4},
                      {"address": "/run/a.sock", "port": None, "address_type": -1}],
        "app_listeners": []}
    assert result["workers"] == [  # by slot
        {"id": 1, "pid": 124, "generation": 1, "state": "listening", "ready": True, "uptime_s": 12.3, "restarts": 0,
         "connections": 5012, "cpu_percent": 3.0, "rss_bytes": 21_000_000, "last_exit": None, "warning": None},
        {"id": 2, "pid": 125, "generation": 2, "state": "crash-looping", "ready": False, "uptime_s": 1.0, "restarts": 1,
         "connections": None, "cpu_percent": None, "rss_bytes": None, "last_exit": last, "warning": None},
    ]


def test_an_empty_slot_shows_no_process():
    master = fake_master([slot(1, None, restarts=3, fails=3, retry=object())])
    (entry,) = render(master, [])["workers"]
    assert entry == {"id": None, "pid": None, "generation": 0, "state": "crash-looping", "ready": False, "uptime_s": 0.0,
                     "restarts": 3, "connections": None, "cpu_percent": None, "rss_bytes": None,
                     "last_exit": None, "warning": None}


def test_a_slot_held_for_memory_carries_a_warning_while_the_limit_stands():
    w1 = SimpleNamespace(id=1, pid=124, state=WorkerState.LISTENING)
    held = slot(1, w1, ready=True, memory_hold=(1, 100 * MiB, 150 * MiB))
    (entry,) = render(fake_master([held], max_memory=100 * MiB), [])["workers"]
    assert entry["warning"] == ("uses 150 MiB at its start, over --max-memory 100 MiB:"
                                " not replaced for memory (raise --max-memory)")
    (entry,) = render(fake_master([held], max_memory=200 * MiB), [])["workers"]  # a reload raised it
    assert entry["warning"] is None
