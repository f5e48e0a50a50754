"""The worker's bind interception, without a primary: ``Interceptor``
dispatching to the binding class the reply's ``mode`` names
(``pycluster.child.intercept`` and ``pycluster.child.bindings``). The
interception is not installed here: its methods are called directly."""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

import pytest

from pycluster.child import intercept
from pycluster.child.bindings import (
    BINDINGS,
    BindingContext,
    ReusePortBinding,
    RoundRobinBinding,
    SharedBinding,
)
from pycluster.child.intercept import Interceptor, exclusive
from pycluster.child.registry import Registry


class FakeLink:
    """The primary, as the interception sees it: canned replies, recorded notices."""

    def __init__(self, reply=None, fds=(), connected=True):
        self.reply = reply or {}
        self.fds = list(fds)
        self.is_connected = connected
        self.queries: list[dict] = []
        self.listening: list[str] = []
        self.closed: list[str] = []
        self.requests = 0

    def connected(self) -> bool:
        return self.is_connected

    def ask(self, query, fds=()):
        self.requests += 1
        self.queries.append(query)
        return dict(self.reply), [os.dup(fd) for fd in self.fds]

    def notify_listening(self, key, address):
        self.listening.append(key)

    def notify_closed(self, key):
        self.closed.append(key)


def interceptor(link: FakeLink) -> Interceptor:
    return Interceptor(Registry(), link, BindingContext(link, threading.Event()))  # type: ignore[arg-type]


@pytest.fixture
def listener():
    """A real listening socket standing in for the primary's."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def sockets():
    made: list[socket.socket] = []

    def make(family=socket.AF_INET, stype=socket.SOCK_STREAM) -> socket.socket:
        sock = socket.socket(family, stype)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def reply(mode: str, port: int = 8000, key: str = "k1") -> dict:
    return {"mode": mode, "key": key, "address": {"address": "127.0.0.1", "port": port, "address_type": 4}}


def test_one_binding_class_per_policy_keyed_by_the_replys_mode():
    assert BINDINGS == {"rr": RoundRobinBinding, "shared": SharedBinding, "reuseport": ReusePortBinding}
    assert all(cls.mode == mode for mode, cls in BINDINGS.items())


def test_shared_bind_installs_the_primarys_listener_under_the_apps_fd(listener, sockets):
    link = FakeLink(reply("shared", listener.getsockname()[1]), [listener.fileno()])
    ic = interceptor(link)
    app = sockets()
    fd = app.fileno()
    ic.bind(app, ("127.0.0.1", 8000))
    assert link.queries == [{"act": "query", "address": "127.0.0.1", "port": 8000, "address_type": 4,
                             "fd": None, "v6only": None, "index": 0}]
    assert app.fileno() == fd
    assert app.getsockname() == listener.getsockname(), "the app's fd is the primary's listener now"
    binding = ic.registry.get(fd)
    assert type(binding) is SharedBinding and binding.key == "k1"
    assert link.listening == [], "a stream socket serves once it listens"
    binding.listen(app, (5,))
    binding.listen(app, (5,))
    assert link.listening == ["k1"], "'listening' is reported once"


def test_a_second_open_listener_on_the_same_address_asks_for_index_1(listener, sockets):
    link = FakeLink(reply("shared"), [listener.fileno()])
    ic = interceptor(link)
    first, second = sockets(), sockets()
    ic.bind(first, ("127.0.0.1", 0))
    ic.bind(second, ("127.0.0.1", 0))
    assert [q["index"] for q in link.queries] == [0, 1]
    ic.forget(first.fileno())
    assert link.closed == ["k1"]
    ic.bind(sockets(), ("127.0.0.1", 0))
    assert link.queries[-1]["index"] == 0, "index 0 is free again once its socket closed"


def test_a_refusal_is_the_oserror_a_bind_raises_and_frees_the_index(listener, sockets):
    link = FakeLink({"errno": errno.EADDRINUSE, "why": "taken"}, [listener.fileno()])
    ic = interceptor(link)
    with pytest.raises(OSError) as info:
        ic.bind(sockets(), ("127.0.0.1", 80))
    assert info.value.errno == errno.EADDRINUSE and "taken" in str(info.value)
    assert ic.registry.indexes.in_use(("127.0.0.1", 80, 4, None)) == set()


def test_an_unknown_mode_is_a_protocol_error_and_frees_the_index(sockets):
    ic = interceptor(FakeLink({"mode": "carrier-pigeon", "key": "k"}))
    with pytest.raises(OSError) as info:
        ic.bind(sockets(), ("127.0.0.1", 80))
    assert info.value.errno == errno.EPROTO
    assert ic.registry.indexes.in_use(("127.0.0.1", 80, 4, None)) == set()


def test_a_lost_descriptor_is_eio(sockets):
    ic = interceptor(FakeLink(reply("shared")))  # no fds came with the reply
    with pytest.raises(OSError) as info:
        ic.bind(sockets(), ("127.0.0.1", 80))
    assert info.value.errno == errno.EIO
    assert ic.registry.get(-1) is None and ic.registry.indexes.in_use(("127.0.0.1", 80, 4, None)) == set()


@pytest.mark.parametrize("how", ["exclusive", "disconnected", "reuseport"])
def test_binds_left_alone_are_local_and_ask_nothing(how, sockets):
    link = FakeLink(reply("shared"), connected=how != "disconnected")
    ic = interceptor(link)
    app = sockets()
    if how == "reuseport":
        app.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if how == "exclusive":
        with exclusive():
            ic.bind(app, ("127.0.0.1", 0))
    else:
        ic.bind(app, ("127.0.0.1", 0))
    assert link.requests == 0 and ic.registry.get(app.fileno()) is None
    assert app.getsockname()[1] != 0, "bound locally"


def test_a_shared_datagram_socket_serves_at_once(sockets):
    udp = sockets(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    link = FakeLink({"mode": "shared", "key": "u1",
                     "address": {"address": "127.0.0.1", "port": udp.getsockname()[1], "address_type": "udp4"}},
                    [udp.fileno()])
    ic = interceptor(link)
    app = sockets(socket.AF_INET, socket.SOCK_DGRAM)
    ic.bind(app, ("127.0.0.1", 0))
    assert link.queries[0]["address_type"] == "udp4"
    assert link.listening == ["u1"]


def test_reuseport_binds_the_apps_own_socket_with_so_reuseport(sockets):
    probe = sockets()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    link = FakeLink(reply("reuseport", port))
    ic = interceptor(link)
    app = sockets()
    ic.bind(app, ("127.0.0.1", 0))
    assert app.getsockname() == ("127.0.0.1", port), "the port the primary resolved"
    assert app.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    binding = ic.registry.get(app.fileno())
    assert type(binding) is ReusePortBinding
    binding.listen(app, (8,))
    other = sockets()
    other.connect(("127.0.0.1", port))  # the app's socket listens itself
    conn, _ = binding.accept(app)
    conn.close()


def test_a_failed_reuseport_bind_tells_the_primary_and_frees_the_index(listener, sockets):
    port = listener.getsockname()[1]  # held without SO_REUSEPORT: the bind fails
    link = FakeLink(reply("reuseport", port, key="r1"))
    ic = interceptor(link)
    with pytest.raises(OSError) as info:
        ic.bind(sockets(), ("127.0.0.1", port))
    assert info.value.errno == errno.EADDRINUSE
    assert link.closed == ["r1"]
    assert ic.registry.indexes.in_use(("127.0.0.1", port, 4, None)) == set()


# -- rr lanes ----------------------------------------------------------------------------

def hand_off(lane: socket.socket, conn: socket.socket) -> None:
    """What the primary does: one byte with the connection's descriptor."""
    lane.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", conn.fileno()))])


def test_rr_accept_takes_the_connection_handed_down_the_lane(listener, sockets):
    primary_end, worker_end = socket.socketpair()
    link = FakeLink(reply("rr", 8000), [worker_end.fileno()])
    ic = interceptor(link)
    app = sockets()
    ic.bind(app, ("127.0.0.1", 8000))
    worker_end.close()
    binding = ic.registry.get(app.fileno())
    assert type(binding) is RoundRobinBinding
    assert binding.getsockname(app) == ("127.0.0.1", 8000), "the lane answers as the listener"
    binding.setsockopt(app, (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))  # ignored: no TCP socket
    client = sockets()
    client.connect(listener.getsockname())
    accepted, _ = listener.accept()
    hand_off(primary_end, accepted)
    accepted.close()
    conn, addr = binding.accept(app)
    try:
        assert addr == client.getsockname()
        client.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    finally:
        conn.close()
        primary_end.close()


def test_rr_lane_closed_by_the_primary_stops_the_listener_for_good(sockets):
    primary_end, worker_end = socket.socketpair()
    link = FakeLink(reply("rr"), [worker_end.fileno()])
    ic = interceptor(link)
    app = sockets()
    app.setblocking(False)
    ic.bind(app, ("127.0.0.1", 8000))
    worker_end.close()
    binding = ic.registry.get(app.fileno())
    primary_end.close()
    with pytest.raises(BlockingIOError):
        binding.accept(app)
    assert binding.dead
    with pytest.raises(BlockingIOError):
        binding.accept(app)
    ic.forget(app.fileno())
    assert link.closed == [], "a lane the primary closed is not reported again"


def test_a_blocking_accept_on_a_stopped_listener_waits_for_the_signal_then_fails(listener, sockets):
    link = FakeLink(reply("shared"), [listener.fileno()])
    ic = interceptor(link)
    app = sockets()
    ic.bind(app, ("127.0.0.1", 8000))
    binding = ic.registry.get(app.fileno())
    ic.registry.stop_accepting(timeout=1.0)
    ic.ctx.signalled.set()
    with pytest.raises(OSError) as info:
        binding.accept(app)
    assert info.value.errno == errno.EBADF


def test_listen_requests_counts_the_active_interceptions_queries():
    assert intercept.listen_requests == 0  # nothing installed in this process
    with pytest.raises(AttributeError):
        intercept.no_such_name  # noqa: B018
