"""One log line as people and log shippers read it: ``text`` (a timestamp,
who, the line) or ``json`` (one object per line). The master's log writer and
the ``logs`` verb format the same entries the same way.

An entry is ``{"t": epoch seconds, "worker": id or None, "pid", "stream", "line"}``.
The timestamp is local time with its UTC offset, to the millisecond; its
seconds part is formatted once per second (a flood of lines costs one cached
string per line, not a ``strftime``).
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring as _quote  # a str -> its JSON literal (C)
from typing import Any

FORMATS = ("text", "json")

_last: tuple[int, str, str] = (-1, "", "")  # (second, "YYYY-MM-DDTHH:MM:SS", "+HH:MM"): swapped whole, thread-safe


def stamp(t: float) -> str:
    """``2026-12-04T23:10:30.123+00:00``: ISO 8601, parseable by ``datetime.fromisoformat``."""
    global _last
    sec = int(t // 1)
    second, head, zone = _last
    if second != sec:
        local = time.localtime(sec)
        off = local.tm_gmtoff or 0
        minutes = abs(off) // 60
        head = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        zone = f"{'-' if off < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"
        _last = (sec, head, zone)
    return f"{head}.{min(999, round((t - sec) * 1000)):03d}{zone}"


def who(worker: Any) -> str:
    """``[worker N]`` or ``[pycluster]`` (``[?]`` for what is neither)."""
    if worker is None:
        return "[pycluster]"
    if isinstance(worker, int) and not isinstance(worker, bool):
        return f"[worker {worker}]"
    return "[?]"


def text(entry: dict[str, Any]) -> str:
    """``2026-12-04T23:10:30.123+00:00 [worker 1] line``."""
    return f"{stamp(entry['t'])} {who(entry['worker'])} {entry['line']}"


def as_json(entry: dict[str, Any]) -> str:
    """One JSON object: time, source, worker, pid, stream, line. Spelled out around the C
    string encoder: a flood's lines cost a third of what ``json.dumps`` of a dict would."""
    worker = entry["worker"]
    pid = entry.get("pid")
    return (f'{{"time": "{stamp(entry["t"])}", "source": "{"master" if worker is None else "worker"}",'
            f' "worker": {"null" if worker is None else int(worker)}, "pid": {"null" if pid is None else int(pid)},'
            f' "stream": {_quote(entry["stream"])}, "line": {_quote(entry["line"])}}}')


RENDER = {"text": text, "json": as_json}
