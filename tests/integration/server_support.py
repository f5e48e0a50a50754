"""Helpers for the real-server integration tests (test_servers, test_unix_udp,
test_rr_lossless): reading a primary script's outcome."""

from __future__ import annotations

DEADLINE_EXIT = 98  # harness.deadline(): the primary was stuck


def describe(res) -> str:
    """Everything a failure message needs: exit status, stdout, stderr."""
    return f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"


def assert_finished(res, workers=(1, 2)) -> None:
    """The primary did not hit its deadline. When it did, say which workers
    never exited (the scripts report each 'exit' event as it happens)."""
    if res.returncode == DEADLINE_EXIT:
        exited = [e[0] for e in res.all("exit")]
        stuck = [w for w in workers if w not in exited]
        raise AssertionError(f"the primary hit its deadline; worker exits seen: {res.all('exit')};"
                             f" never exited: {stuck}\n{describe(res)}")
