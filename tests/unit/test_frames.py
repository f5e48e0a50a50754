"""Unit tests of the IPC codec's descriptor side (pycluster.ipc.frames) and the
internal vocabulary (pycluster.ipc.messages): no processes, no loop."""

from __future__ import annotations

import array
import os
import socket

import pytest

from pycluster.ipc import frames, messages


def _pipe_fds(n: int) -> list[int]:
    fds: list[int] = []
    for _ in range((n + 1) // 2):
        fds.extend(os.pipe())
    for fd in fds[n:]:
        os.close(fd)
    return fds[:n]


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_fd_queue_hands_descriptors_to_frames_in_order():
    q = frames.FdQueue()
    fds = _pipe_fds(3)
    q.add(fds)
    try:
        assert q.take(0) == ([], False)
        assert q.take(2) == (fds[:2], False)
        assert q.take(1) == (fds[2:], False)
        assert len(q) == 0
    finally:
        for fd in fds:
            os.close(fd)


def test_fd_queue_short_of_descriptors_closes_the_rest_and_reports_it_once():
    q = frames.FdQueue()
    fds = _pipe_fds(1)
    q.add(fds)
    assert q.take(2) == ([], True)  # news: no MSG_CTRUNC announced the loss
    assert not _is_open(fds[0])  # the queue lost its alignment: what it held is closed
    assert len(q) == 0


def test_fd_queue_loss_already_reported_as_ctrunc_is_not_news():
    q = frames.FdQueue()
    q.lost()
    assert q.take(1) == ([], False)
    assert q.take(1) == ([], True)  # the next shortfall is news again


def test_fd_queue_close_closes_what_it_holds():
    q = frames.FdQueue()
    fds = _pipe_fds(2)
    q.add(fds)
    q.close()
    assert not any(_is_open(fd) for fd in fds)


def test_received_fds_reads_scm_rights_only():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = _pipe_fds(2)
    try:
        a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        _data, anc, _flags, _ = b.recvmsg(1, frames.CMSG_SPACE, socket.MSG_CMSG_CLOEXEC)
        got = frames.received_fds(anc)
        assert len(got) == 2
        assert all(os.fstat(g).st_ino == os.fstat(f).st_ino for g, f in zip(got, fds))
        for fd in got:
            os.close(fd)
        assert frames.received_fds([(socket.SOL_SOCKET + 1, socket.SCM_RIGHTS, b"\0" * 4)]) == []
    finally:
        for fd in fds:
            os.close(fd)
        a.close()
        b.close()


def test_encode_frame_refuses_unknown_kind_and_too_many_fds():
    with pytest.raises(ValueError):
        frames.encode_frame(7, {})
    with pytest.raises(ValueError):
        frames.encode_frame(frames.KIND_USER, {}, nfds=frames.MAX_FDS + 1)


def test_message_names_are_distinct_and_split_by_direction():
    acts = messages.WORKER_ACTS | messages.PRIMARY_ACTS
    assert not messages.WORKER_ACTS & messages.PRIMARY_ACTS
    assert messages.ACK not in acts  # a reply, never a message a table handles
    env = [v for k, v in vars(messages).items() if k.startswith("ENV_")]
    assert len(env) == len(set(env)) and all(v.startswith("PYCLUSTER_") for v in env)
