"""The worker runtime's pure parts: what the primary passes in the
environment, stdio remapping specs, the exit state and the heartbeat's
judgement (``pycluster.child.runtime``, ``process``, ``heartbeat``; no
processes)."""

from __future__ import annotations

import signal
import threading

import pytest

from pycluster.child.heartbeat import Heartbeat
from pycluster.child.process import ExitState, parse_stdio
from pycluster.child.runtime import BootError, BootSettings


def test_boot_settings_take_pyclusters_variables_out_of_the_environment():
    env = {"PYCLUSTER_WORKER_ID": "3", "PYCLUSTER_CHANNEL_FD": "5", "PYCLUSTER_PPID": "42",
           "PYCLUSTER_STDIO": "3:7", "PYCLUSTER_INSPECT_PORT": "9230", "PYCLUSTER_HEARTBEAT": "2.5",
           "PYCLUSTER_ONLINE": "after-load", "HOME": "/home/app"}
    s = BootSettings.take(env)
    assert (s.worker_id, s.channel_fd, s.ppid, s.stdio, s.inspect_port, s.heartbeat, s.defer_online) == \
        (3, 5, 42, "3:7", 9230, 2.5, True)
    assert env == {"HOME": "/home/app"}, "the app never sees pycluster's variables"


def test_boot_settings_defaults():
    s = BootSettings.take({"PYCLUSTER_WORKER_ID": "1", "PYCLUSTER_CHANNEL_FD": "4", "PYCLUSTER_PPID": ""})
    assert (s.ppid, s.stdio, s.inspect_port, s.heartbeat, s.defer_online) == (0, "", None, None, False)


@pytest.mark.parametrize("env", [{"PYCLUSTER_WORKER_ID": "1"},
                                 {"PYCLUSTER_WORKER_ID": "1", "PYCLUSTER_CHANNEL_FD": "four"}])
def test_a_worker_without_its_channel_cannot_boot(env):
    with pytest.raises(BootError, match="PYCLUSTER_CHANNEL_FD"):
        BootSettings.take(env)


def test_parse_stdio():
    assert parse_stdio("") == []
    assert parse_stdio("3:9,4:10,") == [(3, 9), (4, 10)]
    with pytest.raises(ValueError):
        parse_stdio("3")


# -- ExitState ---------------------------------------------------------------------

def test_pyclusters_sigterm_handler_is_installed_only_over_the_default():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        state = ExitState()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        state.install_sigterm()
        assert state.owns_sigterm()
        with pytest.raises(SystemExit) as info:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert info.value.code == 0 and state.explicit

        def apps_own(signum, frame):
            pass

        other = ExitState()
        signal.signal(signal.SIGTERM, apps_own)
        other.install_sigterm()
        assert signal.getsignal(signal.SIGTERM) is apps_own and not other.owns_sigterm()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_ignored_while_the_main_program_waits_for_its_disconnect():
    state = ExitState()
    state.main_waiting = True
    state._on_sigterm(signal.SIGTERM, None)  # no SystemExit: the process is leaving with 0 anyway
    assert not state.explicit


def test_a_main_program_leaving_on_purpose_does_not_wait_for_a_disconnect():
    state = ExitState()
    state.leaving()
    closed = threading.Event()
    state.wait_for_disconnect(closed)  # returns at once, though never disconnected
    assert not state.main_waiting


def test_a_disconnected_worker_does_not_wait():
    state = ExitState()
    closed = threading.Event()
    closed.set()
    state.wait_for_disconnect(closed)
    assert not state.main_waiting


# -- Heartbeat ---------------------------------------------------------------------

class AppLoop:
    def __init__(self) -> None:
        self.pending: list = []

    def call_soon_threadsafe(self, fn) -> None:
        self.pending.append(fn)

    def run_once(self) -> None:
        pending, self.pending = self.pending, []
        for fn in pending:
            fn()


class Channel:
    closed = False


def test_heartbeat_judges_an_asyncio_app_by_its_loop_answering():
    app = AppLoop()
    hb = Heartbeat(2.0, loop=None, channel=Channel(), app_loops=lambda: {app})  # type: ignore[arg-type]
    assert hb.period == 0.5
    start = hb.loop_seen
    assert hb.alive(start + 1.0), "answered recently (at start)"
    assert len(app.pending) == 1, "each check sends a probe to the app's loop"
    assert not hb.alive(start + 2.5), "no answer for longer than the timeout"
    app.run_once()  # the loop runs the probes: it is alive again
    assert hb.alive(hb.loop_seen + 1.9)
    assert not hb.alive(hb.loop_seen + 2.0)


def test_heartbeat_period_has_a_floor():
    assert Heartbeat(0.01, loop=None, channel=Channel(), app_loops=set).period == 0.05  # type: ignore[arg-type]
