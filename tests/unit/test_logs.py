"""Unit tests of the master's log plumbing (pycluster.master.logs): line cutting, printable text, the
bounded follower backlog and ring, the capped ``logs`` reply. No processes."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycluster.core import logline
from pycluster.core.common import printable
from pycluster.master import logs

pytestmark = pytest.mark.timeout(60)


def test_printable_shows_controls_but_keeps_tab_and_utf8():
    text = "a\x1b]0;t\x07b\x9bc\x7f\x00\r\t h\u00e9llo \u2713 \u65e5\u672c \U0001f600"
    assert printable(text) == "a\\x1b]0;t\\x07b\\x9bc\\x7f\\x00\\x0d\t h\u00e9llo \u2713 \u65e5\u672c \U0001f600"


def test_splitter_cuts_a_long_line_and_counts_the_cut():
    lines = logs.LineSplitter()
    assert lines.feed(b"x" * (logs.MAX_LINE + 10)) == []
    assert lines.feed(b"y" * 5 + b"\nnext\n") == ["x" * logs.MAX_LINE + f" [... 15 bytes cut: line over {logs.MAX_LINE}"
                                                  " bytes]", "next"]
    assert lines.flush() == []


def test_splitter_keeps_nothing_of_a_line_that_never_ends():
    lines = logs.LineSplitter()
    chunk = b"z" * 65536
    for _ in range(200):
        assert lines.feed(chunk) == []
    assert len(lines.buf) == logs.MAX_LINE
    (text,) = lines.flush()
    assert text.endswith(f"[... {200 * 65536 - logs.MAX_LINE} bytes cut: line over {logs.MAX_LINE} bytes]")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 64))
def test_splitter_is_independent_of_how_reads_split_the_bytes(chunks, step):
    data = b"".join(chunks)
    whole = logs.LineSplitter()
    expected = whole.feed(data) + whole.flush()
    pieces = logs.LineSplitter()
    got = []
    for i in range(0, len(data), step):
        got += pieces.feed(data[i:i + step])
    got += pieces.flush()
    assert got == expected
    assert all(len(line) <= 4 * logs.MAX_LINE + 100 for line in got)
    assert not any(ch in line for line in got for ch in "\x1b\x9b\r\n")


def test_splitter_strips_crlf_and_shows_inner_cr():
    lines = logs.LineSplitter()
    assert lines.feed(b"dos line\r\nover\rwrite\n") == ["dos line", "over\\x0dwrite"]


def _entry(text: str) -> dict:
    return {"t": 0.0, "worker": 1, "stream": "stdout", "line": text}


def test_follower_drops_beyond_its_bounds_and_says_how_many_in_place():
    async def go():
        follower = logs.Follower()
        big = "q" * 1000
        total = logs.FOLLOW_CHARS // 1000 + 50
        for _ in range(total):
            follower(_entry(big))
        assert follower.chars <= logs.FOLLOW_CHARS
        follower(_entry("s" * 100))  # a shorter line fits in what is left
        got = []
        while follower.entries:
            got += await follower.batch()
        kept = [e for e in got if e["line"] == big]
        notice = [e for e in got if e["worker"] is None]
        assert len(notice) == 1 and notice[0] is got[-2] and got[-1]["line"] == "s" * 100
        assert notice[0]["line"].startswith(f"{total - len(kept)} log lines dropped")
        assert follower.chars == 0
        follower(_entry("fresh"))
        assert [e["line"] for e in await follower.batch()] == ["fresh"]
        follower.close()
        assert await follower.batch() is None
    asyncio.run(asyncio.wait_for(go(), 10))


def test_follower_notice_stays_where_the_lines_were_dropped():
    async def go():
        follower = logs.Follower()
        for _ in range(logs.FOLLOW_LINES + 3):
            follower(_entry("l"))
        first = await follower.batch()  # makes room
        follower(_entry("later"))
        rest = []
        while follower.entries:
            rest += await follower.batch()
        lines = [e["line"] for e in first + rest]
        assert lines[-2].startswith("3 log lines dropped") and lines[-1] == "later", lines[-3:]
    asyncio.run(asyncio.wait_for(go(), 10))


@pytest.fixture
def book(tmp_path):
    book = logs.LogBook(log_file=str(tmp_path / "unit.log"))
    try:
        yield book
    finally:
        book.close()


def test_ring_is_bounded_in_characters(book):
    for _ in range(logs.RING):
        book._line(1, "stdout", "r" * logs.MAX_LINE)
    assert book.ring_chars <= logs.RING_CHARS
    assert book.ring_chars == sum(len(e["line"]) for e in book.ring)


def test_tail_reply_is_capped_and_counts_what_it_left_out(book):
    for i in range(300):
        book._line(1, "stdout", f"{i:04d}" + "\u00e9" * 8000)  # JSON: 6 bytes per character
    lines, omitted = book.tail(300)
    size = len(json.dumps({"ok": True, "result": {"lines": lines, "omitted": omitted}}))
    assert size <= logs.MAX_REPLY + 4096
    assert omitted == 300 - len(lines) > 0
    assert lines[-1]["line"].startswith("0299")  # the newest are kept
    assert book.tail(0) == ([], 0)
    small, none_left = book.tail(2)
    assert none_left == 0 and len(small) == 2


@pytest.fixture
def st_johns(monkeypatch):
    """Local time UTC-03:30 (St John's in December) for the test, then back."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    logline._last = (-1, "", "")
    yield
    monkeypatch.undo()
    time.tzset()
    logline._last = (-1, "", "")


def test_log_line_times_are_iso_8601_with_the_local_offset(st_johns):
    entry = {"t": 1796428230.123, "worker": None, "pid": 9, "stream": "master", "line": 'a "b"'}
    text = logline.text(entry)
    assert text == '2026-12-04T20:20:30.123-03:30 [pycluster] a "b"'
    when = datetime.fromisoformat(text.split(" ")[0])
    assert when.timestamp() == 1796428230.123 and when.utcoffset() == timedelta(hours=-3, minutes=-30)
    assert json.loads(logline.as_json(entry)) == {"time": "2026-12-04T20:20:30.123-03:30", "source": "master",
                                                  "worker": None, "pid": 9, "stream": "master", "line": 'a "b"'}
    assert logline.text({**entry, "worker": 3, "t": 1796428231.0}) == '2026-12-04T20:20:31.000-03:30 [worker 3] a "b"'
