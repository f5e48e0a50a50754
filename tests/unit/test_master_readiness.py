"""Unit tests of the master's readiness decisions (pycluster.master.readiness). No processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pycluster.core.worker import Address, WorkerState
from pycluster.master import readiness
from pycluster.master.slots import Slot

pytestmark = pytest.mark.timeout(60)


def worker(state, keys=()):
    return SimpleNamespace(state=WorkerState(state), listening_keys=set(keys))


def test_a_worker_is_ready_once_it_listens_on_every_master_listener():
    keys = ["tcp:0.0.0.0:8000", "unix:/run/app.sock"]
    assert not readiness.is_ready(worker("online"), keys)
    assert not readiness.is_ready(worker("listening", keys[:1]), keys)
    assert readiness.is_ready(worker("listening", keys), keys)
    assert readiness.is_ready(worker("listening", [*keys, "tcp:127.0.0.1:9000"]), keys)  # its own extra ones


def test_without_listeners_a_worker_is_ready_once_online():
    assert not readiness.is_ready(worker("none"), [])
    assert readiness.is_ready(worker("online"), [])
    assert readiness.is_ready(worker("listening", ["k"]), [])
    assert not readiness.is_ready(worker("disconnected"), [])
    assert not readiness.is_ready(worker("dead"), [])


def slots(*ready):
    out = []
    for index, flag in enumerate(ready, 1):
        slot = Slot(index)
        slot.ready = flag
        out.append(slot)
    return out


def test_the_first_generation_is_complete_when_every_slot_is_ready_while_starting():
    assert readiness.generation_complete("starting", slots(True, True))
    assert not readiness.generation_complete("starting", slots(True, False))
    assert not readiness.generation_complete("running", slots(True, True))  # once only
    assert readiness.laggard(slots(True, False, False)).index == 2
    assert readiness.laggard(slots(True)) is None


def test_a_boot_failure_names_the_worker_and_quotes_its_stderr():
    text = readiness.boot_failure("web", "worker 3 (pid 42)", "exited with code 1 before it was ready",
                                  ["Traceback (most recent call last):", "ImportError: no"])
    assert text.splitlines() == [
        "web: the first generation never became ready: worker 3 (pid 42) exited with code 1 before it was ready",
        "last lines of worker 3 (pid 42)'s stderr:",
        "  Traceback (most recent call last):",
        "  ImportError: no",
    ]
    assert readiness.boot_failure("web", "a worker", "not ready after 30s", []) == \
        "web: the first generation never became ready: a worker not ready after 30s"


def test_the_ready_summary_shows_http_listeners_as_urls():
    tcp = Address(address="0.0.0.0", port=8000, address_type=4)
    unix = Address(address="/run/app.sock", port=None, address_type=-1)
    udp = Address(address="::1", port=53, address_type="udp6")
    assert readiness.ready_summary("web", 4, "rr", [tcp, unix, udp], 7) == \
        "web ready: 4 workers, policy rr, http://0.0.0.0:8000, unix:/run/app.sock, udp://[::1]:53 (master pid 7)"
    assert readiness.ready_summary("a", 1, "rr", [], 7, [tcp]).startswith("a ready: 1 worker, policy rr, http://")
    assert readiness.ready_summary("a", 1, "rr", [], 7, [tcp]).endswith(" (bound by the app) (master pid 7)")
    assert readiness.ready_summary("q", 1, "shared", [], 7) == "q ready: 1 worker, policy shared, no listeners" \
        " (master pid 7)"
