"""Unit tests of the rolling reload (pycluster.master.reload) against a fake master: the config is
re-read and applied as the table says, progress is reported through the callback, a failed
replacement leaves the old generation serving. No processes."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

import pytest

from pycluster.control.protocol import RequestError
from pycluster.master import config
from pycluster.master.metrics import ClusterCounts
from pycluster.master.reload import Progress, RollingReload, reread_config

pytestmark = pytest.mark.timeout(60)


class FakeWorker:
    ids = itertools.count(100)

    def __init__(self):
        self.id = next(self.ids)
        self.pid = 10000 + self.id
        self.signal_code = None
        self.exit_code = None
        self.signals: list[str] = []
        self.retired = False

    def is_dead(self) -> bool:
        return bool(self.signals)

    def thread_ids(self, limit: int = 4096) -> list[int]:
        return []  # no process: the old generation's priority is left alone (integration tests cover it)

    def signal(self, sig: str) -> None:
        self.signals.append(sig)


class FakeSlot:
    def __init__(self, index: int):
        self.index = index
        self.worker = FakeWorker()
        self.generation = 1
        self.retry = None


class FakeLogs:
    def __init__(self):
        self.lines: list[str] = []

    def master(self, text: str) -> None:
        self.lines.append(text)

    def attach(self, worker, loop, tail) -> None:
        pass


class FakeCheck:
    def __init__(self):
        self.starts = 0

    def start(self) -> None:
        self.starts += 1


class FakeMaster:
    """The public face of the Arbiter that RollingReload uses."""

    def __init__(self, toml_path, workers: int = 2, ready: bool = True):
        self.cfg_flags = {"app": "app:main"}
        self.cfg_path = str(toml_path)
        self.cfg = config.load(self.cfg_flags, config_path=self.cfg_path, environ={})
        self.state = "running"
        self.generation = 1
        self.reload_generation = None
        self.scale_after_reload = None
        self.config_workers = self.cfg.workers
        self.forkserver = None
        self.notify = None
        self.logs = FakeLogs()
        self.heartbeats, self.memory = FakeCheck(), FakeCheck()
        self.counts = ClusterCounts()
        self.slots = {i: FakeSlot(i) for i in range(1, workers + 1)}
        self.wanted = workers
        self.stderr_tails: dict = {}
        self.booting: dict = {}
        self.ready = ready
        self.retired: list[FakeWorker] = []
        self.scaled: list[int] = []
        self.tasks: set = set()

    def keep_task(self, coro, what):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task

    async def fork_worker(self, env):
        worker = FakeWorker()
        loop = asyncio.get_running_loop()
        # 'online' arrives a moment later: the reload has registered its booting future by then.
        loop.call_soon(lambda: self.booting[worker.id].set_result(self.ready))
        return worker

    def worker_env(self):
        return dict(self.cfg.env)

    def adopt(self, slot, worker, generation):
        slot.worker, slot.generation = worker, generation

    def retire_worker(self, worker):
        self.retired.append(worker)

    def scale(self, wanted):
        self.scaled.append(wanted)
        self.wanted = wanted
        return wanted

    def start_forkserver(self):  # pragma: no cover - not --preload here
        raise AssertionError

    def restart_forkserver(self):  # pragma: no cover
        raise AssertionError


@pytest.fixture
def toml(tmp_path):
    path = tmp_path / "pycluster.toml"
    path.write_text('bind = ":8000"\ntimeout = 2\nworkers = 2\n')
    return path


def test_reread_applies_live_keys_notes_restart_keys_and_defers_workers(toml):
    master = FakeMaster(toml)
    toml.write_text('bind = ":9000"\ntimeout = 0\nworkers = 3\nenv = { A = "1" }\n')
    notes = reread_config(master)
    assert notes == ("bind changed in the config: it takes effect when the master restarts",)
    assert master.logs.lines == [f"reload: {notes[0]}"]
    assert master.cfg.bind == (":8000",)  # restart-only: kept
    assert (master.cfg.timeout, dict(master.cfg.env)) == (0.0, {"A": "1"})  # live: applied
    assert master.scale_after_reload == 3  # next generation: once the reload is complete
    assert master.heartbeats.starts == 1 and master.memory.starts == 1


def test_a_bad_config_aborts_before_anything_changes(toml):
    master = FakeMaster(toml)
    before = master.cfg
    toml.write_text("timeout = -3\n")
    with pytest.raises(RequestError) as info:
        RollingReload(master).start()
    assert info.value.code == "bad_config" and "reload aborted, config unchanged" in info.value.message
    assert master.cfg is before and master.state == "running" and not master.tasks


@pytest.mark.parametrize("state, code", [("reloading", "busy"), ("starting", "not_running"),
                                         ("stopping", "not_running")])
def test_a_reload_starts_only_on_a_running_cluster(toml, state, code):
    master = FakeMaster(toml)
    master.state = state
    with pytest.raises(RequestError) as info:
        RollingReload(master).start()
    assert info.value.code == code


def test_a_reload_replaces_every_slot_and_reports_each_through_the_callback(toml):
    master = FakeMaster(toml)
    toml.write_text('bind = ":8000"\ntimeout = 2\nworkers = 3\n')
    old = [slot.worker for slot in master.slots.values()]
    seen: list[Progress] = []

    async def scenario():
        reload = RollingReload(master, on_progress=seen.append)
        reload.start()
        assert master.state == "reloading" and reload.generation == 2
        return reload, await reload.result()

    reload, result = asyncio.run(scenario())
    assert result.ok and result.message == "reloaded" and (result.replaced, result.total) == (2, 2)
    assert list(result.as_dict()) == ["ok", "message", "generation", "replaced", "total", "seconds"]
    assert [(p.replaced, p.total) for p in seen] == [(1, 2), (2, 2)]
    assert [p.worker for p in seen] == [master.slots[1].worker.id, master.slots[2].worker.id]
    assert master.retired == old
    assert (master.generation, master.state, master.reload_generation) == (2, "running", None)
    assert master.scaled == [3] and master.config_workers == 3
    assert reload.notes == ()


def test_a_replacement_that_dies_leaves_the_old_generation_serving(toml):
    master = FakeMaster(toml, ready=False)
    old = {index: slot.worker for index, slot in master.slots.items()}
    master.stderr_tails = {}
    seen: list[Progress] = []

    async def scenario():
        reload = RollingReload(master, on_progress=seen.append)
        reload.start()
        return await reload.result()

    result = asyncio.run(scenario())
    assert not result.ok and "exited" in result.message and result.replaced == 0
    assert {index: slot.worker for index, slot in master.slots.items()} == old
    assert (master.generation, master.state) == (1, "running") and not seen
    assert any(line.startswith("reload aborted:") and "generation 1 keeps serving" in line
               for line in master.logs.lines)
    assert all(isinstance(tail, deque) for tail in master.stderr_tails.values())


def test_a_failing_progress_callback_does_not_stop_the_reload(toml):
    master = FakeMaster(toml)

    def broken(progress: Progress) -> None:
        raise RuntimeError("client gone")

    async def scenario():
        reload = RollingReload(master, on_progress=broken)
        reload.start()
        return await reload.result()

    result = asyncio.run(scenario())
    assert result.ok and result.replaced == 2
    assert sum("progress reporting failed" in line for line in master.logs.lines) == 1
