"""logs: the last lines kept by the master; ``follow`` streams new ones."""

from .. import protocol
from ..protocol import RequestError

NAME = "logs"
HELP = "Print the last log lines (follow=true keeps streaming)."


def validate(request: dict) -> dict:
    lines = request.get("lines", 100)
    follow = request.get("follow", False)
    if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= 100_000:
        raise RequestError("bad_request", "'lines' must be an integer 0-100000")
    if not isinstance(follow, bool):
        raise RequestError("bad_request", "'follow' must be true or false")
    return {"lines": lines, "follow": follow}


def _result(lines: list, omitted: int) -> dict:
    """``omitted``: lines asked for but left out to keep the reply under its byte cap."""
    return {"lines": lines, "omitted": omitted} if omitted else {"lines": lines}


async def run(arbiter, params: dict, writer):
    lines, omitted = arbiter.logs.tail(params["lines"])
    if not params["follow"] or writer is None:
        return _result(lines, omitted)
    from ...master.logs import Follower
    writer.write(protocol.ok(_result(lines, omitted)))
    follower = Follower()
    # A follower waiting for the next line would learn of its client's hang-up only
    # at its next write: the control server watches the connection and tells it.
    hangup = arbiter.control.watch_hangup(writer, follower.close) if arbiter.control else None
    arbiter.logs.followers.add(follower)
    try:
        while not writer.is_closing():
            batch = await follower.batch()
            if batch is None:
                break
            writer.write(protocol.ok({"lines": batch}))
            await writer.drain()
    finally:
        arbiter.logs.followers.discard(follower)
        if hangup is not None:
            hangup.cancel()
    return protocol.STREAMED
