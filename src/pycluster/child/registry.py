"""The worker's shared sockets: bindings by fd, and Node's per-key indexes."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from typing import Any

from .bindings import Binding


class KeyIndexes:
    """Node's handle index: a worker's n-th concurrently open listener on the
    same (address, port, type, fd) is index n, so every worker's first
    ``listen(0)`` shares one random port and second ones share another.
    An index is free again once its socket is closed."""

    def __init__(self) -> None:
        self._used: dict[Hashable, set[int]] = {}
        self._lock = threading.Lock()

    def allocate(self, key: Hashable) -> int:
        """The lowest index free for ``key``, now taken."""
        with self._lock:
            used = self._used.setdefault(key, set())
            index = 0
            while index in used:
                index += 1
            used.add(index)
            return index

    def claim(self, key: Hashable, index: int) -> None:
        with self._lock:
            self._used.setdefault(key, set()).add(index)

    def release(self, key: Hashable, index: int) -> None:
        with self._lock:
            used = self._used.get(key)
            if used is not None:
                used.discard(index)
                if not used:
                    del self._used[key]

    def in_use(self, key: Hashable) -> set[int]:
        with self._lock:
            return set(self._used.get(key, ()))


class Registry:
    """Every shared socket of this worker, by fd (read from any thread)."""

    def __init__(self) -> None:
        self._by_fd: dict[int, Binding] = {}
        self.indexes = KeyIndexes()

    def get(self, fd: int) -> Binding | None:
        return self._by_fd.get(fd)

    def add(self, fd: int, binding: Binding) -> None:
        self._by_fd[fd] = binding

    def forget(self, fd: int) -> Binding | None:
        """The app closed (or detached) ``fd``: free its index and return its binding."""
        binding = self._by_fd.pop(fd, None) if fd >= 0 else None
        if binding is not None:
            self.indexes.release(binding.base, binding.index)
        return binding

    def items(self) -> Iterator[tuple[int, Binding]]:
        return iter(list(self._by_fd.items()))

    def app_loops(self) -> set[Any]:
        """The running asyncio loops the app serves its shared sockets on."""
        return {b.loop for b in list(self._by_fd.values())
                if b.loop is not None and b.loop.is_running() and not b.loop.is_closed()}

    def stop_accepting(self, timeout: float = 2.0) -> None:
        """Stop taking connections on every shared listener of this worker.

        rr lanes are closed by the primary (and retire themselves on EOF).
        shared/reuseport listeners get the tomb under their fd; an asyncio loop
        that watches one first stops watching it (on its own thread), so its
        selector is never left with a stale registration.
        """
        pending = []
        for fd, binding in self.items():
            if binding.dead or not binding.retire_on_disconnect:
                continue
            loop = binding.loop
            if loop is not None and loop.is_running() and not loop.is_closed():
                done = threading.Event()

                def stop(fd: int = fd, binding: Binding = binding, loop: Any = loop,
                         done: threading.Event = done) -> None:
                    try:
                        loop.remove_reader(fd)
                    finally:
                        binding.entomb(fd)
                        done.set()

                try:
                    loop.call_soon_threadsafe(stop)
                    pending.append(done)
                except RuntimeError:
                    binding.entomb(fd)
            else:
                binding.entomb(fd)
        for done in pending:
            done.wait(timeout)
