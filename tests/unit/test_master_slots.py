"""Unit tests of the restart policy (pycluster.master.slots) and of the workforce's use of it
(pycluster.master.workforce, with a fake master and loop). No processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pycluster.master.slots import RestartPolicy, Slot, first_wave, free_index, slot_state
from pycluster.master.workforce import Workforce

pytestmark = pytest.mark.timeout(60)

POLICY = RestartPolicy(restart_delay=0.1, max_restart_delay=1.0, min_uptime=2.0)


def crash_loop(policy: RestartPolicy, slot: Slot, n: int) -> list[float | None]:
    return [policy.after_exit(slot, crashed=True) for _ in range(n)]


def test_fast_crashes_back_off_from_restart_delay_doubling_up_to_the_maximum():
    slot = Slot(1)
    assert crash_loop(POLICY, slot, 7) == [None, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert (slot.fails, slot.restarts) == (7, 7)


def test_an_exit_after_min_uptime_restarts_at_once_and_resets_the_back_off():
    slot = Slot(1)
    crash_loop(POLICY, slot, 4)
    assert POLICY.crashed(1.99) and not POLICY.crashed(2.0)
    assert POLICY.after_exit(slot, crashed=POLICY.crashed(5.0)) is None
    assert (slot.fails, slot.restarts) == (0, 5)
    assert crash_loop(POLICY, slot, 3) == [None, 0.1, 0.2]  # starts over from restart_delay


def test_a_zero_restart_delay_still_counts_as_backing_off():
    slot = Slot(1)
    assert crash_loop(RestartPolicy(0.0, 5.0, 1.0), slot, 3) == [None, 0.0, 0.0]


def test_a_slot_crash_looping_for_days_does_not_overflow():
    assert POLICY.delay(100_000) == 1.0


def test_the_policy_reads_a_config():
    cfg = SimpleNamespace(restart_delay=1, max_restart_delay=30, min_uptime=5)
    assert RestartPolicy.of(cfg) == RestartPolicy(1.0, 30.0, 5.0)


def worker(state: str = "listening") -> SimpleNamespace:
    return SimpleNamespace(id=1, pid=100, state=state)


@pytest.mark.parametrize("setup, expected", [
    (dict(), "dead"),
    (dict(deferred=True), "starting"),
    (dict(launching=object()), "starting"),
    (dict(fails=2), "crash-looping"),
    (dict(retry=object()), "crash-looping"),
    (dict(worker=worker("none")), "starting"),
    (dict(worker=worker("online")), "online"),
    (dict(worker=worker("listening"), ready=True), "listening"),
    (dict(worker=worker("disconnected")), "disconnecting"),
    (dict(worker=worker("dead")), "dead"),
    (dict(worker=worker("online"), fails=2), "crash-looping"),  # up, not ready, after repeated crashes
    (dict(worker=worker("listening"), fails=2, ready=True), "listening"),
])
def test_slot_state(setup, expected):
    slot = Slot(1)
    for key, value in setup.items():
        setattr(slot, key, value)
    assert slot_state(slot) == expected


def test_first_wave_leaves_a_core_to_the_master_unless_forking_from_a_fork_server():
    assert first_wave(8, preload=False, cpus=4) == 3
    assert first_wave(8, preload=False, cpus=1) == 1
    assert first_wave(8, preload=True, cpus=1) == 8


def test_a_scale_up_fills_the_gaps_first():
    assert free_index({}) == 1
    assert free_index({1: Slot(1), 3: Slot(3)}) == 2
    assert free_index({1: Slot(1), 2: Slot(2)}) == 3


class FakeLoop:
    def __init__(self):
        self.later: list[tuple[float, object, tuple]] = []

    def call_later(self, delay, fn, *args):
        self.later.append((delay, fn, args))
        return SimpleNamespace(cancel=lambda: None)


class FakeEngine:
    def __init__(self):
        self.forked = 0

    def fork(self, env):
        self.forked += 1
        return SimpleNamespace(id=self.forked, pid=1000 + self.forked, state="none")


def fake_host(**cfg):
    lines: list[str] = []
    config = dict(restart_delay=0.5, max_restart_delay=4.0, min_uptime=1.0, preload=False, timeout=0,
                  boot_timeout=30.0, graceful_timeout=30.0)
    config.update(cfg)
    host = SimpleNamespace(
        cfg=SimpleNamespace(**config), state="running", generation=3, reload_generation=None,
        logs=SimpleNamespace(master=lines.append, attach=lambda *a: None), loop=FakeLoop(), engine=FakeEngine(),
        stderr_tails={}, worker_env=dict, boot_timed_out=lambda w: None)
    return host, lines


def test_the_workforce_backs_a_crash_looping_slot_off_on_the_loop():
    host, lines = fake_host()
    workforce = Workforce(host)
    slot = workforce.slot(1)
    workforce.restart(slot, crashed=True)
    assert host.engine.forked == 1 and slot.worker is not None and slot.retry is None  # the first crash: at once
    assert slot.generation == 3 and workforce.by_worker[slot.worker.id] is slot
    assert host.loop.later[-1][0] == 30.0  # the boot timer
    slot.worker = None
    workforce.restart(slot, crashed=True)
    assert host.engine.forked == 1 and slot.retry is not None
    delay, fn, args = host.loop.later[-1]
    assert (delay, args) == (0.5, (slot,))
    assert lines == ["slot 1 is crash-looping: next start in 0.50s"]
    fn(*args)  # the back-off ends: started again
    assert host.engine.forked == 2 and slot.retry is None


def test_the_workforce_does_not_start_while_stopping():
    host, _lines = fake_host()
    host.state = "stopping"
    workforce = Workforce(host)
    workforce.restart(workforce.slot(1), crashed=False)
    assert host.engine.forked == 0


def test_release_frees_the_slot_and_records_the_exit():
    host, _lines = fake_host()
    workforce = Workforce(host)
    slot = workforce.slot(2)
    workforce.spawn(slot)
    worker = slot.worker
    assert workforce.release(worker, None, "SIGKILL") is slot
    assert slot.worker is None and worker.id not in workforce.by_worker
    assert slot.last_exit["signal"] == "SIGKILL" and slot.last_exit["code"] is None
    assert workforce.release(worker, 0, None) is None  # known no more
