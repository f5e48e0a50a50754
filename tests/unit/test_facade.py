"""The ``pycluster`` facade (STYLE: "re-exports the public names with an
explicit ``__all__``; a test checks it"), the bare ``Worker()`` record (Node's
test-cluster-worker-constructor.js) and the ``--bind`` address syntax of
SPEC section 3 (``pycluster.core.sockets.parse_address``)."""

from __future__ import annotations
import __future__

import types

import pytest

import pycluster
from pycluster import Worker, WorkerState
from pycluster.core.events import EventEmitter
from pycluster.core.sockets import ListenSpec, parse_address

PUBLIC = {
    # module-level API (SPEC section 2)
    "is_primary", "is_master", "is_worker", "fork", "setup_primary", "setup_master", "settings",
    "scheduling_policy", "SCHED_RR", "SCHED_NONE", "SCHED_REUSEPORT", "workers", "worker",
    "disconnect", "on", "once", "off", "run", "serve", "listen", "listeners", "exclusive",
    # classes
    "Worker", "WorkerState", "Address", "EventEmitter",
    # errors
    "ClusterError", "ProtocolError", "ChannelClosedError", "AckTimeoutError", "SettingsError",
    "NotPrimaryError",
    "__version__",
}


# -- __all__ -------------------------------------------------------------------

def test_all_lists_exactly_the_public_names():
    assert len(pycluster.__all__) == len(set(pycluster.__all__)), "duplicates in __all__"
    assert set(pycluster.__all__) == PUBLIC


def test_every_name_in_all_exists():
    missing = [name for name in pycluster.__all__ if not hasattr(pycluster, name)]
    assert missing == []


def test_no_public_attribute_is_left_out_of_all():
    """Every public, non-module attribute of the facade is in __all__ (or is
    private): nothing half-public."""
    stray = sorted(
        name for name, value in vars(pycluster).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
        and name not in pycluster.__all__
    )
    assert stray == [], f"public names missing from __all__ (make them private or list them): {stray}"


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from pycluster import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(pycluster.__all__)


def test_facade_values_in_the_primary():
    assert (pycluster.SCHED_NONE, pycluster.SCHED_RR, pycluster.SCHED_REUSEPORT) == (1, 2, 3)
    assert pycluster.is_primary is True and pycluster.is_master is True and pycluster.is_worker is False
    assert pycluster.worker is None
    assert isinstance(pycluster.workers, dict) and isinstance(pycluster.settings, dict)
    assert pycluster.setup_master is pycluster.setup_primary
    assert issubclass(pycluster.SettingsError, ValueError)
    assert issubclass(pycluster.SettingsError, pycluster.ClusterError)
    for name in ("ProtocolError", "ChannelClosedError", "AckTimeoutError", "NotPrimaryError"):
        assert issubclass(getattr(pycluster, name), pycluster.ClusterError)
    assert isinstance(pycluster.__version__, str) and pycluster.__version__


# -- Worker() (test-cluster-worker-constructor) ---------------------------------

def test_bare_worker_defaults():
    worker = Worker()
    assert worker.id == 0
    assert worker.state == "none" and worker.state is WorkerState.NONE
    assert worker.process is None
    assert worker.pid is None
    assert worker.exited_after_disconnect is None
    assert worker.is_dead() is False
    assert worker.is_connected() is False
    assert isinstance(worker, EventEmitter)


def test_worker_constructor_options():
    process = object()
    worker = Worker(id=3, state="online", process=process)
    assert worker.id == 3
    assert worker.state == "online" and worker.state is WorkerState.ONLINE
    assert worker.process is process
    assert worker.exited_after_disconnect is None


def test_bare_worker_is_an_event_emitter():
    worker = Worker()
    seen = []
    worker.on("message", lambda message: seen.append(message))
    assert worker.emit("message", {"a": 1}, None) is True
    assert seen == [{"a": 1}]


def test_worker_state_is_a_str_enum():
    assert [s.value for s in WorkerState] == ["none", "online", "listening", "disconnected", "dead"]
    assert str(WorkerState.LISTENING) == "listening"
    with pytest.raises(ValueError):
        Worker(state="sleeping")


# -- parse_address: every --bind form of SPEC section 3 -----------------------

GOOD = [
    # HOST:PORT
    ("127.0.0.1:8000", ListenSpec("tcp", "127.0.0.1", 8000), "127.0.0.1:8000"),
    ("0.0.0.0:0", ListenSpec("tcp", "0.0.0.0", 0), "0.0.0.0:0"),
    ("localhost:80", ListenSpec("tcp", "localhost", 80), "localhost:80"),
    ("127.0.0.1:65535", ListenSpec("tcp", "127.0.0.1", 65535), "127.0.0.1:65535"),
    # [V6]:PORT
    ("[::1]:8000", ListenSpec("tcp", "::1", 8000), "[::1]:8000"),
    ("[::]:443", ListenSpec("tcp", "::", 443), "[::]:443"),
    ("[fe80::1%eth0]:80", ListenSpec("tcp", "fe80::1%eth0", 80), "[fe80::1%eth0]:80"),
    # :PORT (all interfaces)
    (":8000", ListenSpec("tcp", "", 8000), ":8000"),
    # unix:/path
    ("unix:/run/app.sock", ListenSpec("unix", path="/run/app.sock"), "unix:/run/app.sock"),
    # udp://HOST:PORT
    ("udp://127.0.0.1:5353", ListenSpec("udp", "127.0.0.1", 5353), "udp://127.0.0.1:5353"),
    ("udp://[::1]:53", ListenSpec("udp", "::1", 53), "udp://[::1]:53"),
    ("udp://:9999", ListenSpec("udp", "", 9999), "udp://:9999"),
    # fd://N
    ("fd://3", ListenSpec("fd", fd=3), "fd://3"),
    ("fd://0", ListenSpec("fd", fd=0), "fd://0"),
]


@pytest.mark.parametrize("text, expected, canonical", GOOD, ids=[g[0] for g in GOOD])
def test_parse_bind_forms(text, expected, canonical):
    parsed = parse_address(text)
    assert parsed == expected
    assert str(parsed) == canonical
    assert parse_address(str(parsed)) == parsed  # round trip


def test_parse_api_forms():
    assert parse_address(("127.0.0.1", 8000)) == ListenSpec("tcp", "127.0.0.1", 8000)
    assert parse_address(("", 0)) == ListenSpec("tcp", "", 0)
    assert parse_address(8000) == ListenSpec("tcp", "", 8000)
    assert parse_address(("127.0.0.1", 53), "udp") == ListenSpec("udp", "127.0.0.1", 53)
    spec = ListenSpec("unix", path="/x.sock")
    assert parse_address(spec) is spec


BAD = [
    "",
    "127.0.0.1",             # no port
    "localhost",
    "127.0.0.1:",            # empty port
    "127.0.0.1:http",        # not a number
    "127.0.0.1:70000",       # out of range
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1:8_0",         # int() accepts these; a port is digits only
    "127.0.0.1:+80",
    "127.0.0.1: 80",
    "::1:80",                # IPv6 without brackets
    "[::1]8000",             # missing ':' after ']'
    "[::1]:",
    "[::1",
    "[not-an-ip]:80",
    "unix:",                 # no path
    "udp://",
    "udp://127.0.0.1",
    "fd://",
    "fd://x",
    "fd://-1",
    "fd://+3",
    "fd://1_0",
]


@pytest.mark.parametrize("text", BAD)
def test_bad_bind_forms_raise_value_error_naming_the_address(text):
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert repr(text) in str(info.value) or f"'{text}'" in str(info.value), str(info.value)


@pytest.mark.parametrize("value", [None, True, 3.5, ("h",), 70000, -1, ("127.0.0.1", 80.5),
                                   ("127.0.0.1", True), ("127.0.0.1", "8_0")],
                         ids=repr)
def test_bad_api_forms_raise_value_error_naming_the_address(value):
    with pytest.raises(ValueError) as info:
        parse_address(value)
    assert repr(value) in str(info.value), str(info.value)
