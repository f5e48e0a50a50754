"""Unit tests of the IPC channel: frame codec (property-based) and Channel over a socketpair."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycluster.errors import AckTimeoutError, ChannelClosedError, ProtocolError
from pycluster.ipc.channel import (
    HEADER,
    KIND_INTERNAL,
    KIND_USER,
    MAX_FDS,
    MAX_FRAME,
    Channel,
    FrameDecoder,
    encode_frame,
)

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 5.0  # seconds any single await may take before the test fails

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(json_scalars | st.text(), lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(), inner, max_size=6), max_leaves=40)
kinds = st.sampled_from([KIND_USER, KIND_INTERNAL])
nfds_st = st.integers(0, MAX_FDS)


def frame(payload: bytes, kind: int = KIND_USER, nfds: int = 0, reserved: int = 0) -> bytes:
    return HEADER.pack(len(payload), kind, nfds, reserved) + payload


# -- codec -----------------------------------------------------------------

@given(obj=json_values, kind=kinds, nfds=nfds_st)
def test_any_json_value_round_trips(obj, kind, nfds):
    assert FrameDecoder().feed(encode_frame(kind, obj, nfds)) == [(kind, obj, nfds)]


@settings(max_examples=200)
@given(frames=st.lists(st.tuples(kinds, json_values, nfds_st), min_size=1, max_size=6), data=st.data())
def test_stream_split_anywhere_decodes_the_same(frames, data):
    stream = b"".join(encode_frame(k, o, n) for k, o, n in frames)
    every_byte = st.just(set(range(len(stream))))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=40) | every_byte))
    dec, out, prev = FrameDecoder(), [], 0
    for cut in cuts + [len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == [tuple(f) for f in frames]
    assert dec.buffered == 0


json_ish = st.text(alphabet='[]{}",:0123456789.eE-+truefalsnNIiy \\', max_size=100).map(str.encode)
garbage_chunks = (st.binary(max_size=300)  # raw bytes, or a valid header before a garbage payload
                  | st.builds(frame, st.binary(max_size=200) | json_ish, kinds, nfds_st))


@settings(max_examples=500)
@given(chunks=st.lists(garbage_chunks, max_size=5), max_frame=st.sampled_from([8, 1024, MAX_FRAME]))
def test_garbage_raises_only_protocol_error(chunks, max_frame):
    dec = FrameDecoder(max_frame)
    try:
        for chunk in chunks:
            for kind, _obj, nfds in dec.feed(chunk):
                assert kind in (KIND_USER, KIND_INTERNAL) and 0 <= nfds <= MAX_FDS
    except ProtocolError:
        pass  # the only exception allowed


@pytest.mark.parametrize("header", [
    HEADER.pack(4, 2, 0, 0), HEADER.pack(4, 255, 0, 0), HEADER.pack(4, 0, MAX_FDS + 1, 0),
    HEADER.pack(4, 0, 0, 1), HEADER.pack(MAX_FRAME + 1, 0, 0, 0), b"\xff\xff\xff\xff\0\0\0\0",
], ids=["kind2", "kind255", "nfds17", "reserved", "max+1", "4GiB"])
def test_bad_header_rejected_before_payload(header):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(header)


def test_frame_size_limit_is_exact():
    data = encode_frame(KIND_USER, "xx", max_frame=4)  # '"xx"' is 4 bytes
    dec = FrameDecoder(max_frame=4)
    assert dec.feed(data[:HEADER.size]) == [] and dec.feed(data[HEADER.size:]) == [(KIND_USER, "xx", 0)]
    with pytest.raises(ValueError):
        encode_frame(KIND_USER, "xxx", max_frame=4)
    with pytest.raises(ProtocolError):
        FrameDecoder(max_frame=4).feed(HEADER.pack(5, KIND_USER, 0, 0))


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000])
def test_deep_nesting_is_protocol_error_not_recursion_error(payload):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame(payload))


@pytest.mark.parametrize("payload", [
    b'"\xff"', b'"\xc3"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b"\x80",  # not UTF-8
    b"", b"   ", b"{", b"1 2", b"nul", b'"abc',  # not JSON
])
def test_invalid_utf8_or_json_is_protocol_error(payload):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame(payload))


@pytest.mark.parametrize("args", [
    (KIND_USER, float("nan")), (KIND_USER, [float("inf")]), (KIND_USER, {"x": -float("inf")}),
    (KIND_USER, {1, 2}), (KIND_USER, b"bytes"), (KIND_USER, object()), (KIND_USER, {(1, 2): 3}),
    (KIND_USER, None, MAX_FDS + 1), (KIND_USER, None, -1), (2, None), (-1, None),
    (KIND_USER, "x" * 100, 0, 50),  # over the size limit
], ids=lambda a: repr(a)[:40])
def test_encode_rejects(args):
    with pytest.raises((ValueError, TypeError)):
        encode_frame(*args)



def test_lone_surrogate_is_rejected_at_encode_or_round_trips():
    try:
        data = encode_frame(KIND_USER, "\ud800")
    except (ValueError, TypeError):
        return
    assert FrameDecoder().feed(data) == [(KIND_USER, "\ud800", 0)]


# -- Channel over a real socketpair ----------------------------------------

@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    loop_errors: list = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    try:
        yield loop
        loop.run_until_complete(asyncio.sleep(0))  # let queued callbacks run, then check
        assert loop_errors == [], f"exceptions escaped into the loop: {loop_errors}"
    finally:
        loop.close()


class End:
    """One Channel plus what its callbacks saw."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.errors: list[BaseException] = []
        self.close_calls = 0
        self.closed = loop.create_future()
        self.ch = Channel(sock, loop, on_message=lambda *m: self.inbox.put_nowait(m),
                          on_close=self._on_close, on_error=self.errors.append)

    def _on_close(self):
        self.close_calls += 1
        if not self.closed.done():
            self.closed.set_result(None)

    async def recv(self):
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)


@pytest.fixture
def pair(loop):
    a, b = socket.socketpair()
    try:
        ends = End(a, loop), End(b, loop)
        ends[0].ch.start(), ends[1].ch.start()
        yield ends
        ends[0].ch.close(), ends[1].ch.close()
    finally:
        a.close()
        b.close()


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT * 2))


def reply_future(loop):
    """A future for on_reply's first (obj, fds, err), and the list of all its calls."""
    fut, calls = loop.create_future(), []

    def on_reply(*result):
        calls.append(result)
        fut.done() or fut.set_result(result)
    return fut, on_reply, calls


def test_messages_delivered_in_order_with_kind(loop, pair):
    a, b = pair
    sent = [(KIND_USER if i % 3 else KIND_INTERNAL, {"i": i}) for i in range(200)]
    sent.append((KIND_USER, {"act": "ack", "ack": 1}))  # a user message is never taken for an ack
    for kind, obj in sent:
        assert a.ch.send(kind, obj)

    async def main():
        return [await b.recv() for _ in sent]
    assert run(loop, main()) == [(k, o, []) for k, o in sent]
    assert a.errors == b.errors == []


def test_one_mib_message(loop, pair):
    a, b = pair
    blob = "x" * (1 << 20)
    done = loop.create_future()

    async def main():  # sent from the loop thread: the writer is added there, not via call_soon
        assert a.ch.send(KIND_USER, {"blob": blob}, callback=done.set_result)
        msg = await b.recv()
        assert await asyncio.wait_for(done, TIMEOUT) is None
        return msg
    assert run(loop, main()) == (KIND_USER, {"blob": blob}, [])
    assert a.ch.write_backlog == 0


def test_file_descriptors_travel_with_the_frame(loop, pair):
    a, b = pair
    r, w = os.pipe()
    s1, s2 = socket.socketpair()
    got: list[int] = []
    try:
        assert a.ch.send(KIND_USER, {"fds": 2}, [w, s1.fileno()])
        kind, obj, got = run(loop, b.recv())
        assert (kind, obj, len(got)) == (KIND_USER, {"fds": 2}, 2)
        assert all(not os.get_inheritable(fd) for fd in got)
        assert os.write(got[0], b"through the pipe") == 16
        assert os.read(r, 64) == b"through the pipe"
        with socket.socket(fileno=got.pop(1)) as s:
            s.sendall(b"via socket")
            assert s2.recv(64) == b"via socket"
        os.fstat(w)  # the sender kept its own descriptor
    finally:
        for fd in (r, w, *got):
            os.close(fd)
        s1.close()
        s2.close()


def test_request_reply(loop, pair):
    a, b = pair
    fut, on_reply, calls = reply_future(loop)
    a.ch.request({"act": "ping", "x": 41}, on_reply=on_reply)

    async def main():
        kind, req, _ = await b.recv()
        assert kind == KIND_INTERNAL and req["act"] == "ping" and isinstance(req["seq"], int)
        assert b.ch.reply(req, {"answer": req["x"] + 1})
        assert b.ch.reply(req, {"answer": "duplicate"})  # a second ack is dropped
        b.ch.send(KIND_USER, "marker")
        assert await a.recv() == (KIND_USER, "marker", [])
        return req, await asyncio.wait_for(fut, TIMEOUT)
    req, (obj, fds, err) = run(loop, main())
    assert err is None and fds == [] and len(calls) == 1
    assert obj == {"act": "ack", "ack": req["seq"], "answer": 42}


def test_request_timeout_then_late_reply_is_ignored(loop, pair):
    a, b = pair
    fut, on_reply, calls = reply_future(loop)
    a.ch.request({"act": "ping"}, timeout=0.2, on_reply=on_reply)

    async def main():
        _, req, _ = await b.recv()
        started = loop.time()
        obj, fds, err = await asyncio.wait_for(fut, TIMEOUT)
        assert loop.time() - started < 3.0  # the 0.2 s timer fired, not our own wait_for
        b.ch.reply(req, {"late": True})
        b.ch.send(KIND_USER, "marker")  # a processes the late ack before this
        assert await a.recv() == (KIND_USER, "marker", [])
        return obj, err
    obj, err = run(loop, main())
    assert obj is None and isinstance(err, AckTimeoutError)
    assert len(calls) == 1


def test_peer_close_fails_pending_requests_and_closes_once(loop, pair):
    a, b = pair
    futs = [reply_future(loop) for _ in range(3)]
    for i, (_, on_reply, _) in enumerate(futs):
        a.ch.request({"act": "wait", "i": i}, timeout=None, on_reply=on_reply)

    async def main():
        for _ in futs:
            await b.recv()
        b.ch.close()
        await asyncio.wait_for(a.closed, TIMEOUT)
        return [await asyncio.wait_for(f, TIMEOUT) for f, _, _ in futs]
    results = run(loop, main())
    assert all(obj is None and isinstance(err, ChannelClosedError) for obj, _, err in results)
    assert all(len(calls) == 1 for _, _, calls in futs)
    a.ch.close()
    assert a.ch.closed and a.close_calls == 1 and b.close_calls == 1


def test_garbage_from_peer_is_protocol_error_and_closes(loop):
    a, raw = socket.socketpair()
    try:
        end = End(a, loop)
        end.ch.start()
        raw.sendall(frame(b"null"))

        async def main():
            assert await end.recv() == (KIND_USER, None, [])
            raw.sendall(b"\xff" * 16)
            await asyncio.wait_for(end.closed, TIMEOUT)
        run(loop, main())
        assert end.ch.closed and end.close_calls == 1
        assert len(end.errors) == 1 and isinstance(end.errors[0], ProtocolError)
        assert raw.recv(1) == b""  # our end of the socket was closed
    finally:
        a.close()
        raw.close()


def test_send_and_request_after_close(loop, pair):
    a, _ = pair
    a.ch.close()
    results: list = []
    assert a.ch.send(KIND_USER, {"x": 1}, callback=results.append) is False
    assert len(results) == 1 and isinstance(results[0], ChannelClosedError)
    fut, on_reply, _ = reply_future(loop)
    a.ch.request({"act": "ping"}, on_reply=on_reply)
    obj, _, err = run(loop, fut)
    assert obj is None and isinstance(err, ChannelClosedError)
    assert a.close_calls == 1


def test_send_from_another_thread(loop, pair):
    a, b = pair
    blob = "y" * (1 << 20)  # big enough to fill the socket and need the loop's writer
    errors: list = []

    def worker():
        try:
            for i in range(100):
                assert a.ch.send(KIND_USER, {"i": i})
            assert a.ch.send(KIND_USER, {"blob": blob})
            assert a.ch.send(KIND_USER, "last")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker, daemon=True)

    async def main():
        thread.start()  # while the loop runs: sends race with the loop's reader and writer
        return [await b.recv() for _ in range(102)]
    try:
        got = run(loop, main())
    finally:
        thread.join(TIMEOUT)
    assert errors == [] and not thread.is_alive()
    assert [m[1] for m in got] == [{"i": i} for i in range(100)] + [{"blob": blob}, "last"]
