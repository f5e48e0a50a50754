"""Fuzzing the two parsers that read bytes from another process (RELIABILITY 2.17, T25/T26).

IPC codec (``pycluster.ipc.channel.FrameDecoder``; round-trips and plain garbage are in
test_channel.py): corrupted valid streams fed in arbitrary pieces raise only ProtocolError;
good frames before garbage are still delivered; an advertised length is never allocated up
front (a frame over the 64 MiB limit is refused on its header alone, and memory follows the
bytes received, not the length announced).

Control protocol (``control.protocol.decode_request`` + each command's ``validate``): any
bytes as a request line, and any JSON value in any field of any verb, give a request whose
parameters have the documented types and ranges, or a RequestError whose reply is one line
of JSON; never another exception.
"""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycluster.control import commands, protocol
from pycluster.control.protocol import MAX_REQUEST, RequestError
from pycluster.errors import ProtocolError
from pycluster.ipc.channel import HEADER, KIND_INTERNAL, KIND_USER, MAX_FDS, MAX_FRAME, FrameDecoder, encode_frame

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
kinds = st.sampled_from([KIND_USER, KIND_INTERNAL])


# -- IPC codec --------------------------------------------------------------------------------------

def _feed_all(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list:
    frames, prev = [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        frames += decoder.feed(stream[prev:cut])
        prev = cut
    return frames


@st.composite
def corrupted_streams(draw):
    """A valid stream of frames, then damaged: bytes flipped, cut, inserted or spliced."""
    frames = draw(st.lists(st.tuples(kinds, json_values, st.integers(0, MAX_FDS)), min_size=1, max_size=4))
    data = bytearray(b"".join(encode_frame(k, o, n) for k, o, n in frames))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "header"]))
        pos = draw(st.integers(0, len(data)))
        if how == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] ^= draw(st.integers(1, 255))
        elif how == "truncate":
            del data[pos:]
        elif how == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif how == "splice":
            other = draw(st.integers(0, len(data)))
            data[pos:pos] = data[min(pos, other):max(pos, other)][:64]
        else:  # a forged header: any length, kind, nfds, reserved
            data[pos:pos] = HEADER.pack(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 255)),
                                        draw(st.integers(0, 255)), draw(st.integers(0, 2**16 - 1)))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return bytes(data), cuts


@FUZZ
@given(case=corrupted_streams(), max_frame=st.sampled_from([16, 4096, MAX_FRAME]))
def test_corrupted_streams_raise_only_protocol_error(case, max_frame):
    stream, cuts = case
    try:
        frames = _feed_all(FrameDecoder(max_frame), stream, cuts)
    except ProtocolError:
        return  # the only exception allowed
    for kind, _obj, nfds in frames:
        assert kind in (KIND_USER, KIND_INTERNAL) and 0 <= nfds <= MAX_FDS


@FUZZ
@given(good=st.lists(st.tuples(kinds, json_values), min_size=1, max_size=4),
       garbage=st.binary(min_size=1, max_size=64), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_good_frames_before_garbage_are_delivered_then_the_error(good, garbage, cuts):
    stream = b"".join(encode_frame(k, o) for k, o in good)
    # A header that can never be valid (kind 9), so the garbage is garbage whatever follows it.
    bad = HEADER.pack(len(garbage), 9, 0, 0) + garbage
    data = stream + bad
    decoder = FrameDecoder()
    got, prev = [], 0
    with pytest.raises(ProtocolError):
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data), len(data)]:
            got += decoder.feed(data[prev:cut])
            prev = cut
    assert got == [(k, o, 0) for k, o in good]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=st.integers(0, 2**32 - 1) | st.sampled_from([MAX_FRAME, MAX_FRAME + 1, 2**32 - 1]),
       body=st.binary(max_size=64))
def test_an_advertised_length_is_refused_on_the_header_or_not_allocated(length, body):
    decoder = FrameDecoder()
    header = HEADER.pack(length, KIND_USER, 0, 0)
    if length > MAX_FRAME:
        with pytest.raises(ProtocolError):
            decoder.feed(header)  # the header alone is enough to refuse it
        return
    tracemalloc.start()
    try:
        try:
            decoder.feed(header + body)
        except ProtocolError:
            pass  # a short frame whose payload is not JSON
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"feeding {8 + len(body)} bytes of a {length}-byte frame allocated {peak} bytes"


def test_memory_follows_the_bytes_received_not_the_length_announced():
    decoder = FrameDecoder()
    chunk = b"x" * 65536
    tracemalloc.start()
    try:
        assert decoder.feed(HEADER.pack(MAX_FRAME, KIND_USER, 0, 0)) == []
        for _ in range(16):  # 1 MiB of a 64 MiB frame
            assert decoder.feed(chunk) == []
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.buffered == 16 * len(chunk)
    assert peak < 4 * 1024 * 1024, f"1 MiB received of a 64 MiB frame took a peak of {peak} bytes"


# -- control protocol -----------------------------------------------------------------------------

FIELDS = {"status": (), "reopen": (), "stop": ("now",), "reload": ("wait",), "logs": ("lines", "follow"),
          "scale": ("workers", "delta")}


def _handle(line: bytes):
    """What the server does with one request line: (module, params) or the RequestError."""
    try:
        request = protocol.decode_request(line)
        return commands._check(request)
    except RequestError as exc:
        assert isinstance(exc.code, str) and exc.code, exc
        assert isinstance(exc.message, str) and exc.message, exc
        reply = protocol.error(exc.code, exc.message)
        assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
        decoded = json.loads(reply)
        assert decoded == {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        return exc


def _is_int(value, low, high) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_params(name: str, params: dict) -> None:
    """A validated request has exactly the documented shape (SPEC section 5)."""
    if name in ("status", "reopen"):
        assert params == {}
    elif name == "stop":
        assert set(params) == {"now"} and isinstance(params["now"], bool)
    elif name == "reload":
        assert set(params) == {"wait"} and isinstance(params["wait"], bool)
    elif name == "logs":
        assert set(params) == {"lines", "follow"} and isinstance(params["follow"], bool)
        assert _is_int(params["lines"], 0, 100_000)
    elif name == "scale":
        workers, delta = params["workers"], params["delta"]
        assert (workers is None) != (delta is None), params
        assert workers is None or _is_int(workers, 0, 4096), params
        assert delta is None or _is_int(delta, -4096, 4096), params
    else:  # a verb added without a case here: fuzz it anyway, but say so
        pytest.fail(f"no shape check for the {name!r} command; add it to FIELDS and _check_params")


json_ish = st.text(alphabet='[]{}",:0123456789.eE-+truefalsnNIiy \\\x00\u00e9\ud800cmdstaopl',
                   max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass"))
known = st.sampled_from([json.dumps({"cmd": c}).encode() for c in FIELDS])
lines = (st.binary(max_size=200) | json_ish
         | st.tuples(known, st.binary(max_size=8), st.integers(0, 30)).map(
             lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]))  # a valid request with bytes inserted


@FUZZ
@given(line=lines)
def test_any_bytes_as_a_request_line_give_a_request_or_an_error_reply(line):
    outcome = _handle(line)
    if not isinstance(outcome, RequestError):
        module, params = outcome
        _check_params(module.NAME, params)


weird_values = (json_values | st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 2**63,
                                               -2**63, 10**300, "", "1", "true", "\x00", [], {}])
                | st.integers(-10_000, 10_000) | st.integers(100_000, 100_001))


@FUZZ
@given(verb=st.sampled_from(sorted(commands.COMMANDS)), data=st.data())
def test_any_json_value_in_any_field_of_any_verb(verb, data):
    names = FIELDS.get(verb, ()) + ("cmd_", "now", "workers", "x")
    request = {"cmd": verb}
    for name in data.draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=4)):
        request[name] = data.draw(weird_values)
    line = json.dumps(request).encode()  # NaN/Infinity as Python's json writes (and reads) them
    outcome = _handle(line)
    if not isinstance(outcome, RequestError):
        module, params = outcome
        assert module.NAME == verb
        _check_params(verb, params)


@pytest.mark.parametrize("line", [
    b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"cmd":"status","x":' + b"[" * 5000,
    b'{"cmd":"scale","workers":' + b"9" * 5000 + b"}",  # past int()'s 4300-digit limit
    b'{"cmd":"scale","workers":1e999}', b'{"cmd":"scale","delta":NaN}', b'{"cmd":"logs","lines":-Infinity}',
    b'{"cmd":"status"}\x00', b'{"cmd":"stat\x00us"}', b"\x00" * 64, b"", b" ", b"\xef\xbb\xbf{\"cmd\":\"status\"}",
    b'{"cmd":"\\ud800"}', b'{"cmd":"status","cmd":"dance"}', b'{"cmd":"__class__"}', b'{"cmd":"status "}',
    b'"status"', b"null", b"5", b"[]", b'["status"]', b'{"cmd":null}', b'{"cmd":["status"]}', b'{"cmd":{}}',
    b"x" * (MAX_REQUEST + 1), b'{"cmd":"status","pad":"' + b"\xff" * 1000 + b'"}',
], ids=lambda line: repr(line[:30]) + (f"..({len(line)})" if len(line) > 30 else ""))
def test_pathological_request_lines_are_refused(line):
    assert isinstance(_handle(line), RequestError)


def test_a_request_of_exactly_the_limit_is_read_one_byte_more_is_refused():
    head, tail = b'{"cmd":"status","pad":"', b'"}'
    fits = head + b"x" * (MAX_REQUEST - len(head) - len(tail)) + tail
    assert len(fits) == MAX_REQUEST
    module, params = _handle(fits)
    assert module.NAME == "status" and params == {}
    too_big = _handle(fits[:-2] + b'x"}')
    assert isinstance(too_big, RequestError) and too_big.code == "too_large" and too_big.fatal


def test_numbers_that_are_not_integers_never_become_counts():
    for value in (1.0, 1.5, -0.0, float("nan"), math.inf, True, False, "3", [3], {"n": 3}):
        for verb, field in (("scale", "workers"), ("scale", "delta"), ("logs", "lines")):
            outcome = _handle(json.dumps({"cmd": verb, field: value}).encode())
            assert isinstance(outcome, RequestError), (verb, field, value, outcome)
