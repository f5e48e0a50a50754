"""The worker's accepted-connection tracker (pycluster.child.inflight)."""

from __future__ import annotations

import gc
import os
import socket

from pycluster.child.inflight import InFlight


def test_busy_until_every_accepted_connection_is_closed():
    tracker = InFlight()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        assert not tracker.busy()
        tracker.add(a)
        tracker.add(c)
        assert tracker.busy()
        a.close()
        assert tracker.busy()
        c.close()
        assert not tracker.busy()
    finally:
        for s in (a, b, c, d):
            s.close()


def test_a_makefile_keeps_the_connection_open_until_it_is_closed_too():
    tracker = InFlight()
    a, b = socket.socketpair()
    try:
        tracker.add(a)
        reader = a.makefile("rb")
        a.close()
        assert tracker.busy()
        reader.close()
        assert not tracker.busy()
    finally:
        b.close()


def test_collected_detached_or_closed_under_the_object_counts_as_done():
    tracker = InFlight()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        collected, detached, raw = (p[0] for p in pairs)
        for s in (collected, detached, raw):
            tracker.add(s)
        del collected
        pairs[0] = (None, pairs[0][1])
        gc.collect()
        os.close(detached.detach())
        os.close(raw.fileno())
        assert not tracker.busy()
        raw.detach()  # the fd is gone already
    finally:
        for first, second in pairs:
            second.close()
