"""logs: the last lines kept by the master; ``follow`` streams new ones."""

from __future__ import annotations

import json
from typing import Any

from ...core import logline
from ...errors import EXIT_FAILED, EXIT_NO_MASTER, ControlError
from .. import protocol
from ..client import Echo, NoMaster, stream
from ..client import request as send
from ..protocol import RequestError

NAME = "logs"
HELP = "Print the master's recent log lines (workers' output included)."
MAX_LINES = 100_000


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    lines = request.get("lines", 100)
    follow = request.get("follow", False)
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= MAX_LINES:
        raise RequestError("bad_request", f"'lines' must be an integer 0-{MAX_LINES}")
    if not isinstance(follow, bool):
        raise RequestError("bad_request", "'follow' must be true or false")
    return {"lines": lines, "follow": follow}


def _result(lines: list[Any], omitted: int) -> dict[str, Any]:
    """``omitted``: lines asked for but left out to keep the reply under its byte cap."""
    return {"lines": lines, "omitted": omitted} if omitted else {"lines": lines}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> Any:
    lines, omitted = arbiter.logs.tail(params["lines"])
    if not params["follow"] or writer is None:
        return _result(lines, omitted)
    writer.write(protocol.ok(_result(lines, omitted)))
    follower = arbiter.logs.follow()
    # A follower waiting for the next line would learn of its client's hang-up only
    # at its next write: the control server watches the connection and tells it.
    hangup = arbiter.control.watch_hangup(writer, follower.close) if arbiter.control else None
    try:
        while not writer.is_closing():
            batch = await follower.batch()
            if batch is None:
                break
            writer.write(protocol.ok({"lines": batch}))
            await writer.drain()
    finally:
        arbiter.logs.unfollow(follower)
        if hangup is not None:
            hangup.cancel()
    return protocol.STREAMED


# -- in the client ---------------------------------------------------------------------
def request(lines: int = 100, follow: bool = False) -> dict[str, Any]:
    return {"cmd": NAME, "lines": lines, "follow": True} if follow else {"cmd": NAME, "lines": lines}


def client(path: str, echo: Echo, *, lines: int, follow: bool) -> None:
    """Print the lines (and, following, the new ones until interrupted).

    Whatever comes back is printed or named in one line, never a traceback: a
    reply may be cut, not JSON, or shaped unlike a ``logs`` result."""
    try:
        if not follow:
            render(send(path, request(lines)), echo)
            return
        for reply in stream(path, request(lines, follow=True)):
            render(reply, echo)
    except KeyboardInterrupt:
        pass
    except NoMaster as exc:
        raise ControlError(str(exc), EXIT_NO_MASTER) from exc
    except OSError as exc:
        raise ControlError(f"cannot reach the master on {path}: {exc}", EXIT_FAILED) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a reply of the wrong shape
        raise ControlError(f"logs: unreadable reply from the master on {path}: {printable(str(exc))[:200]}",
                           EXIT_FAILED) from exc


def render(reply: object, echo: Echo) -> None:
    """Print one reply's lines; an error reply is a ControlError, a reply of
    the wrong shape a ValueError."""
    if not isinstance(reply, dict):
        raise ValueError(f"expected a JSON object, got {type(reply).__name__}")
    if not reply.get("ok"):
        err = reply.get("error")
        err = err if isinstance(err, dict) else {"message": str(err)}
        raise ControlError(f"{printable(str(err.get('message', 'request failed')))}"
                           f" ({printable(str(err.get('code', '?')))})", EXIT_FAILED)
    result = reply.get("result")
    entries = result.get("lines") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(entries, list):
        raise ValueError("no list of lines in the result")
    omitted = result.get("omitted")
    if isinstance(omitted, int) and omitted > 0:
        echo(f"pycluster: {omitted} earlier lines left out (the reply would have been too large)", err=True)
    for entry in entries:
        echo(format_entry(entry))


def format_entry(entry: object) -> str:
    """``2026-12-04T23:10:30.123+00:00 [worker N] line`` (the master's ``--log-format text``
    line); control characters shown, not obeyed. An entry without a usable time has none."""
    if not isinstance(entry, dict):
        return f"[?] {printable(json.dumps(entry))}"
    t = entry.get("t")
    when = ""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        try:
            when = logline.stamp(t) + " "
        except (OverflowError, OSError, ValueError):  # a time no calendar holds
            when = ""
    line = entry.get("line", "")
    return f"{when}{logline.who(entry.get('worker'))} {printable(line if isinstance(line, str) else json.dumps(line))}"


def printable(text: str) -> str:
    """Control characters but line breaks shown, not obeyed (a master passes a
    worker's bytes along); a lone surrogate (valid JSON, not UTF-8) becomes '?'."""
    from ...core.common import printable as shown
    return "\n".join(map(shown, text.split("\n"))).encode("utf-8", "replace").decode("utf-8")
