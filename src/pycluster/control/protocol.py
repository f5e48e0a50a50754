"""Control protocol framing: one JSON object per line, each way.

Requests are ``{"cmd": NAME, ...}``; replies ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": {"code": ..., "message": ...}}``. A request line
is at most ``MAX_REQUEST`` bytes.
"""

from __future__ import annotations

import json
from typing import Any

MAX_REQUEST = 1024 * 1024
STREAMED = object()  # a command that wrote its own replies
MAX_DEPTH = 32


class RequestError(Exception):
    """A request that gets an error reply; ``fatal`` ones also close the connection."""

    def __init__(self, code: str, message: str, *, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def decode_request(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        raise RequestError("too_large", f"request of {len(line)} bytes is over the {MAX_REQUEST}-byte limit",
                           fatal=True)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("bad_json", "request is not valid UTF-8", fatal=True) from None
    if _depth_over(text, MAX_DEPTH):
        raise RequestError("bad_json", f"request nests deeper than {MAX_DEPTH} levels", fatal=True)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError("bad_json", f"request is not valid JSON: {exc}", fatal=True) from None
    if not isinstance(obj, dict):
        raise RequestError("bad_request", "request must be a JSON object", fatal=True)
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise RequestError("bad_request", "request needs a string 'cmd'", fatal=True)
    return obj


def _depth_over(text: str, limit: int) -> bool:
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}, separators=(",", ":")).encode() + b"\n"


def error(code: str, message: str) -> bytes:
    return json.dumps({"ok": False, "error": {"code": code, "message": message}},
                      separators=(",", ":")).encode() + b"\n"


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
