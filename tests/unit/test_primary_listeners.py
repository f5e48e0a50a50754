"""Unit tests of primary/listeners.py and the handles' pure parts: handle
keys, address types, the POLICIES table (which handle class for which policy
and address kind), the listener registry on loopback sockets, and the
round-robin rotation bookkeeping. No process is started."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from pycluster import SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
from pycluster.core.common import POLICY_NAMES
from pycluster.primary.handles import Handle, ReusePortHandle, RoundRobinHandle, SharedHandle
from pycluster.primary.handles._lanes import Lane, leave_rotation
from pycluster.primary.listeners import (
    POLICIES,
    Listeners,
    Refused,
    check_may_bind,
    family_type,
    handle_class,
    handle_key,
)
from pycluster.primary.settings import Tuning


class FakeWorker:
    def __init__(self, id: int = 1, pid: int | None = None):
        self.id = id
        self.pid = pid
        self.handle_keys: set[str] = set()


# -- keys and address types -------------------------------------------------------

def test_handle_key_is_nodes():
    msg = {"address": "127.0.0.1", "port": 8000, "address_type": 4, "fd": None, "index": 2}
    assert handle_key(msg) == "127.0.0.1:8000:4:None:2"
    assert handle_key({"address": "/tmp/s", "address_type": -1}) == "/tmp/s:None:-1:None:0"
    assert handle_key({"fd": 3, "address_type": None}) == "None:None:None:3:0"


def test_keys_differ_by_index_and_type():
    base = {"address": "::", "port": 1, "address_type": 6}
    assert handle_key(base) != handle_key({**base, "index": 1})
    assert handle_key(base) != handle_key({**base, "address_type": "udp6"})


@pytest.mark.parametrize("atype,expected", [
    (4, (socket.AF_INET, socket.SOCK_STREAM)), (6, (socket.AF_INET6, socket.SOCK_STREAM)),
    (-1, (socket.AF_UNIX, socket.SOCK_STREAM)), ("udp4", (socket.AF_INET, socket.SOCK_DGRAM)),
    ("udp6", (socket.AF_INET6, socket.SOCK_DGRAM)),
])
def test_family_type(atype, expected):
    assert family_type(atype) == expected


@pytest.mark.parametrize("atype", [None, 5, "tcp4", "4", [4], {}])
def test_a_bad_address_type_is_a_value_error(atype):
    with pytest.raises(ValueError, match="bad address type"):
        family_type(atype)


# -- the policy table ---------------------------------------------------------------

def test_every_policy_has_an_entry():
    assert set(POLICIES) == set(POLICY_NAMES)


@pytest.mark.parametrize("policy,inet,local", [
    (SCHED_RR, RoundRobinHandle, RoundRobinHandle),
    (SCHED_NONE, SharedHandle, SharedHandle),
    (SCHED_REUSEPORT, ReusePortHandle, SharedHandle),
])
def test_handle_class_per_policy_and_address_kind(policy, inet, local):
    assert handle_class(policy, stream=True, inet=True) is inet
    assert handle_class(policy, stream=True, inet=False) is local
    # Datagrams are shared whatever the policy.
    assert handle_class(policy, stream=False, inet=True) is SharedHandle
    assert handle_class(policy, stream=False, inet=False) is SharedHandle


def test_only_reuseport_binds_with_so_reuseport():
    assert [cls for cls in (RoundRobinHandle, SharedHandle, ReusePortHandle) if cls.reuseport] == [ReusePortHandle]
    assert {cls.mode for cls in (RoundRobinHandle, SharedHandle, ReusePortHandle)} == {"rr", "shared", "reuseport"}


# -- the registry on loopback sockets -------------------------------------------------

@pytest.fixture
def listeners():
    reg = Listeners()
    yield reg
    reg.close()


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


@pytest.mark.parametrize("policy,cls,listens", [
    (SCHED_RR, RoundRobinHandle, True), (SCHED_NONE, SharedHandle, True), (SCHED_REUSEPORT, ReusePortHandle, False),
])
def test_create_picks_the_policy_handle(listeners, policy, cls, listens):
    listeners.policy = policy
    msg = {"address": "127.0.0.1", "port": 0, "address_type": 4}
    handle = listeners.create(handle_key(msg), msg, owned=False)
    listeners.handles[handle.key] = handle
    assert type(handle) is cls
    assert _listening(handle.sock) is listens
    assert handle.address.port > 0 and handle.address.address == "127.0.0.1"


def test_udp_is_shared_even_under_rr(listeners):
    msg = {"address": "127.0.0.1", "port": 0, "address_type": "udp4"}
    handle = listeners.create(handle_key(msg), msg, owned=False)
    listeners.handles[handle.key] = handle
    assert type(handle) is SharedHandle


def test_rr_handle_gets_the_tuning(listeners):
    listeners.tuning = Tuning(window=3, handoff_timeout=0.5)
    msg = {"address": "127.0.0.1", "port": 0, "address_type": 4}
    handle = listeners.create(handle_key(msg), msg, owned=False)
    listeners.handles[handle.key] = handle
    assert isinstance(handle, RoundRobinHandle)
    assert (handle.window, handle.handoff_timeout) == (3, 0.5)


def test_add_listener_registers_the_resolved_port_too(listeners):
    handle = listeners.add_listener("127.0.0.1:0")
    port = handle.address.port
    assert listeners.master == [handle] and handle.owned
    assert handle.key == f"127.0.0.1:{port}:4:None:0"
    assert listeners.handles["127.0.0.1:0:4:None:0"] is handle
    assert listeners.handles[handle.key] is handle


def test_a_worker_gets_the_masters_listener_and_leaving_keeps_it(listeners):
    handle = listeners.add_listener("127.0.0.1:0", kind="tcp")
    listeners.policy = SCHED_NONE  # the handle is RR: the policy of the day it was made
    worker = FakeWorker()
    reply, fds = listeners.answer_query(worker, {"master": 0, "seq": 1}, [])
    assert reply["mode"] == "rr" and reply["key"] == handle.key and reply["masters"] == 1
    assert reply["address"]["port"] == handle.address.port and len(fds) == 1
    assert worker.handle_keys == {handle.key}
    listeners.release_all(worker)
    assert worker.handle_keys == set()
    assert not handle.closed and listeners.handles[handle.key] is handle  # owned: outlives its workers


def test_a_shared_listener_closes_when_its_last_worker_leaves(listeners):
    listeners.policy = SCHED_NONE
    msg = {"address": "127.0.0.1", "port": 0, "address_type": 4, "index": 0}
    one, two = FakeWorker(1, os.getpid()), FakeWorker(2, os.getpid())
    reply, fds = listeners.answer_query(one, msg, [])
    assert reply["mode"] == "shared" and len(fds) == 1
    key = reply["key"]
    assert listeners.answer_query(two, msg, [])[0]["key"] == key
    handle = listeners.handles[key]
    listeners.release(one, key)
    assert not handle.closed
    listeners.release(two, key)
    assert handle.closed and key not in listeners.handles


@pytest.mark.parametrize("msg,code", [
    ({"master": 1}, errno.EINVAL), ({"master": "0"}, errno.EINVAL),
    ({"address": "127.0.0.1", "port": 70000, "address_type": 4}, errno.EINVAL),
    ({"address": "127.0.0.1", "port": 0, "address_type": "tcp"}, errno.EINVAL),
    ({"address": "", "address_type": -1}, errno.EINVAL),
    ({"fd": 3, "address_type": None}, errno.EBADF),  # a worker's fd must come with the query
    ({"fd": True, "address_type": None}, errno.EINVAL),
])
def test_a_bad_query_gets_an_error_reply(listeners, msg, code):
    reply, fds = listeners.answer_query(FakeWorker(pid=os.getpid()), msg, [])
    assert reply["errno"] == code and reply["message"] and fds == []
    assert "mode" not in reply and not listeners.handles


def test_a_worker_sent_socket_is_shared_and_never_listened_on_for_it(listeners):
    listeners.policy = SCHED_RR
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        msg = {"fd": 9, "address_type": None, "index": 0}
        reply, fds = listeners.answer_query(FakeWorker(), msg, [mine.fileno()])
        assert reply["mode"] == "shared" and reply["key"].startswith("fd:")
        again, _ = listeners.answer_query(FakeWorker(2), msg, [mine.fileno()])
        assert again["key"] == reply["key"] and len(listeners.handles) == 1


def test_check_may_bind():
    check_may_bind(FakeWorker(pid=os.getpid()), {"address": "127.0.0.1", "port": 80, "address_type": 4})
    with pytest.raises(Refused) as info:
        check_may_bind(FakeWorker(id=7, pid=None), {"address": "127.0.0.1", "port": 80, "address_type": 4})
    assert info.value.errno == errno.EACCES
    assert "worker 7" in info.value.why and "127.0.0.1:80" in info.value.why
    with pytest.raises(Refused, match="not have /run/app.sock bound"):
        check_may_bind(FakeWorker(pid=None), {"address": "/run/app.sock", "address_type": -1})


def test_a_refused_bind_is_answered_with_why(listeners):
    reply, _ = listeners.answer_query(FakeWorker(pid=None), {"address": "127.0.0.1", "port": 0, "address_type": 4}, [])
    assert reply["errno"] == errno.EACCES and reply["why"].startswith("pycluster: worker 1 runs with other")
    assert reply["message"] == f"[Errno {errno.EACCES}] {reply['why']}"


def test_every_handle_is_a_handle():
    assert all(issubclass(cls, Handle) for cls in (RoundRobinHandle, SharedHandle, ReusePortHandle))


# -- round-robin rotation bookkeeping ---------------------------------------------------

@pytest.fixture
def lanes():
    made = []
    for i in range(4):
        a, b = socket.socketpair()
        made.append(Lane(i, a, b))
    yield made
    for lane in made:
        lane.a.close()
        lane.b.close()


@pytest.mark.parametrize("leaving,cursor,expected_cursor", [
    (0, 2, 1),   # before the cursor: the cursor moves back with the lanes
    (2, 2, 2),   # at the cursor: the next lane slides into its place
    (3, 1, 1),   # after the cursor: unchanged
    (3, 3, 0),   # the last one, at the cursor: wraps to the first
])
def test_leave_rotation_keeps_the_next_lane_next(lanes, leaving, cursor, expected_cursor):
    rotation = list(lanes)
    following = [lane for lane in lanes if lane is not lanes[leaving]]
    upcoming = lanes[cursor] if cursor != leaving else lanes[(cursor + 1) % len(lanes)]
    new_cursor = leave_rotation(rotation, lanes[leaving], cursor)
    assert rotation == following
    assert new_cursor == expected_cursor and rotation[new_cursor] is upcoming


def test_leave_rotation_of_a_stranger_or_the_last_lane(lanes):
    rotation = lanes[:1]
    assert leave_rotation(rotation, lanes[2], 0) == 0 and rotation == lanes[:1]
    assert leave_rotation(rotation, lanes[0], 0) == 0 and rotation == []


def test_a_lane_counts_what_waits(lanes):
    lane = lanes[0]
    assert lane.waiting() == 0
    lane.a.send(b"cc")
    assert lane.waiting() == 2


def test_one_worker_cannot_hold_more_than_its_share_of_listeners(listeners, monkeypatch):
    """Each listener a worker holds costs the primary descriptors (its own
    socket, or a dup of the worker's, under any index the worker names):
    past the cap a query is refused with EMFILE, and the primary holds no
    more; one it already holds is still answered."""
    monkeypatch.setattr("pycluster.primary.listeners.MAX_LISTENERS_PER_WORKER", 3)
    listeners.policy = SCHED_RR
    worker = FakeWorker()
    with socket.socket() as mine:
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        for index in range(3):
            reply, _ = listeners.answer_query(worker, {"fd": 9, "address_type": None, "index": index},
                                              [mine.fileno()])
            assert "errno" not in reply, reply
        held = len(listeners.handles)
        reply, fds = listeners.answer_query(worker, {"fd": 9, "address_type": None, "index": 3},
                                            [mine.fileno()])
        assert reply["errno"] == errno.EMFILE and "holds 3 listeners" in reply["why"] and fds == []
        reply, _ = listeners.answer_query(worker, {"address": "127.0.0.1", "port": 0, "address_type": 4,
                                                   "index": 0}, [])
        assert reply["errno"] == errno.EMFILE
        assert len(listeners.handles) == held
        again, _ = listeners.answer_query(worker, {"fd": 9, "address_type": None, "index": 0}, [mine.fileno()])
        assert "errno" not in again  # already held: no new descriptor
        other, _ = listeners.answer_query(FakeWorker(2), {"fd": 9, "address_type": None, "index": 3},
                                          [mine.fileno()])
        assert "errno" not in other  # the cap is per worker
