"""The status sampler's process cache (core/stats.py): a reaped worker's pid is
forgotten (the master calls ``forget`` on every exit), so the cache follows the
live workers, not every worker ever run."""

from __future__ import annotations

import os

from pycluster.core import stats


def test_a_sampled_pid_is_kept_until_forgotten():
    pid = os.getpid()
    stats.forget(pid)
    before = stats.cached()
    cpu, rss = stats.sample(pid)
    assert rss is not None and rss > 0 and cpu is not None
    assert stats.cached() == before + 1
    stats.sample(pid)  # sampled again: the same entry
    assert stats.cached() == before + 1
    stats.forget(pid)
    assert stats.cached() == before
    stats.forget(pid)  # twice is harmless
    assert stats.cached() == before
