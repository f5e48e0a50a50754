"""Unit tests of the master's background tasks (pycluster.master.tasks) and signal handlers
(pycluster.master.signals): failures are logged, handlers are removed. No processes."""

from __future__ import annotations

import asyncio
import signal

import pytest

from pycluster.master.arbiter import SIGNALS
from pycluster.master.signals import captured_signals
from pycluster.master.tasks import TaskSet

pytestmark = pytest.mark.timeout(60)


def test_a_failed_task_is_logged_with_its_traceback_and_forgotten():
    lines: list[str] = []

    async def boom():
        raise RuntimeError("broken")

    async def fine():
        return 1

    async def cancelled():
        await asyncio.sleep(60)

    async def main():
        tasks = TaskSet(lines.append)
        loop = asyncio.get_running_loop()
        waiting = tasks.keep(loop, cancelled(), "waiting")
        done = [tasks.keep(loop, boom(), "the boom"), tasks.keep(loop, fine(), "the fine one")]
        assert len(tasks) == 3
        await asyncio.wait(done)
        waiting.cancel()
        await asyncio.wait([waiting])
        await asyncio.sleep(0)
        return len(tasks)

    assert asyncio.run(main()) == 0
    (line,) = lines
    assert line.startswith("the boom failed: RuntimeError('broken')\nTraceback (most recent call last):")
    assert "in boom" in line and line.endswith("RuntimeError: broken")


def test_signal_handlers_are_set_while_inside_and_removed_after():
    calls: list[tuple[int, dict]] = []

    async def main():
        loop = asyncio.get_running_loop()
        with captured_signals(loop, SIGNALS, lambda signum, cmd: calls.append((signum, cmd))) as on_sigchld:
            on_sigchld(lambda: None)
            assert loop.remove_signal_handler(signal.SIGUSR1) is True  # it was set ...
            loop.add_signal_handler(signal.SIGUSR1, lambda: calls.append((0, {})))
            signal.raise_signal(signal.SIGTTIN)
            await asyncio.sleep(0.05)
        return [loop.remove_signal_handler(s) for s in (*SIGNALS, signal.SIGCHLD)]

    assert asyncio.run(main()) == [False] * (len(SIGNALS) + 1)  # ... and nothing is left set
    assert calls == [(signal.SIGTTIN, {"cmd": "scale", "delta": 1})]

