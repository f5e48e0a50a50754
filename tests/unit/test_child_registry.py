"""The worker's registry of shared sockets and Node's per-key indexes
(``pycluster.child.registry``; no processes)."""

from __future__ import annotations

import select
import socket
import threading

from pycluster.child.bindings import BindingContext, ReusePortBinding, RoundRobinBinding, SharedBinding
from pycluster.child.registry import KeyIndexes, Registry


class Notices:
    def __init__(self) -> None:
        self.listening: list[str] = []
        self.closed: list[str] = []

    def notify_listening(self, key, address) -> None:
        self.listening.append(key)

    def notify_closed(self, key) -> None:
        self.closed.append(key)


def context() -> BindingContext:
    return BindingContext(Notices(), threading.Event())


# -- KeyIndexes --------------------------------------------------------------------

def test_each_open_listener_on_a_key_gets_the_next_index():
    indexes = KeyIndexes()
    key = ("0.0.0.0", 0, 4, None)
    assert [indexes.allocate(key) for _ in range(3)] == [0, 1, 2]
    assert indexes.allocate(("0.0.0.0", 0, 6, None)) == 0, "another key counts on its own"


def test_a_released_index_is_reused_lowest_first():
    indexes = KeyIndexes()
    key = ("127.0.0.1", 0, 4, None)
    for _ in range(3):
        indexes.allocate(key)
    indexes.release(key, 1)
    indexes.release(key, 0)
    assert indexes.allocate(key) == 0
    assert indexes.allocate(key) == 1
    assert indexes.allocate(key) == 3


def test_releasing_the_last_index_forgets_the_key():
    indexes = KeyIndexes()
    key = ("::", 80, 6, None)
    indexes.allocate(key)
    indexes.release(key, 0)
    indexes.release(key, 0)  # twice: harmless
    indexes.release(("other",), 5)  # never used: harmless
    assert indexes.in_use(key) == set()
    assert indexes._used == {}


def test_claim_marks_an_index_taken():
    indexes = KeyIndexes()
    key = ("master", "k", 4, None)
    indexes.claim(key, 0)
    assert indexes.allocate(key) == 1
    assert indexes.in_use(key) == {0, 1}


def test_concurrent_allocations_never_share_an_index():
    indexes = KeyIndexes()
    key = ("0.0.0.0", 0, 4, None)
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(200):
            index = indexes.allocate(key)
            with lock:
                got.append(index)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(800))


# -- Registry ------------------------------------------------------------------------

def binding(cls, ctx, key="k", base=("127.0.0.1", 0, 4, None), index=0, stream=True):
    return cls(ctx, {"key": key, "address": {"address": "127.0.0.1", "port": 8000}}, base, index,
               socket.AF_INET, stream)


def test_forget_frees_the_index_and_returns_the_binding():
    ctx = context()
    registry = Registry()
    base = ("127.0.0.1", 0, 4, None)
    index = registry.indexes.allocate(base)
    b = binding(SharedBinding, ctx, base=base, index=index)
    registry.add(7, b)
    assert registry.get(7) is b
    assert registry.forget(7) is b
    assert registry.get(7) is None and registry.forget(7) is None
    assert registry.indexes.in_use(base) == set()
    assert registry.forget(-1) is None, "a closed socket's fileno"


def test_stop_accepting_entombs_shared_and_reuseport_listeners_but_not_rr_lanes():
    ctx = context()
    registry = Registry()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        kinds = [SharedBinding, ReusePortBinding, RoundRobinBinding]
        bindings = [binding(cls, ctx, key=cls.mode) for cls in kinds]
        for (mine, _peer), b in zip(pairs, bindings):
            registry.add(mine.fileno(), b)
        for _mine, peer in pairs:
            peer.send(b"x")  # each is readable now
        registry.stop_accepting(timeout=1.0)
        assert [b.dead for b in bindings] == [True, True, False]
        readable, _, _ = select.select([mine for mine, _ in pairs], [], [], 0.1)
        assert readable == [pairs[2][0]], "a stopped listener's fd must never be readable again"
    finally:
        for a, b in pairs:
            a.close()
            b.close()


class FakeLoop:
    def __init__(self, running: bool = True, closed: bool = False) -> None:
        self.running, self.closed = running, closed
        self.removed: list[int] = []

    def is_running(self) -> bool:
        return self.running

    def is_closed(self) -> bool:
        return self.closed

    def call_soon_threadsafe(self, fn, *args) -> None:
        fn(*args)  # runs "on the loop" at once

    def remove_reader(self, fd: int) -> bool:
        self.removed.append(fd)
        return True


def test_stop_accepting_unwatches_a_listener_on_the_apps_loop_first():
    ctx = context()
    registry = Registry()
    mine, peer = socket.socketpair()
    try:
        b = binding(SharedBinding, ctx)
        b.loop = FakeLoop()
        registry.add(mine.fileno(), b)
        registry.stop_accepting(timeout=1.0)
        assert b.loop.removed == [mine.fileno()]
        assert b.dead and not b.listening
    finally:
        mine.close()
        peer.close()


def test_app_loops_are_the_running_loops_of_shared_sockets():
    ctx = context()
    registry = Registry()
    running, stopped, closed = FakeLoop(), FakeLoop(running=False), FakeLoop(closed=True)
    for fd, loop in enumerate([running, stopped, closed, running, None], start=100):
        b = binding(SharedBinding, ctx)
        b.loop = loop
        registry.add(fd, b)
    assert registry.app_loops() == {running}
