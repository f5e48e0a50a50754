"""logs: the last lines kept by the master; ``follow`` streams new ones."""

from ..control import protocol
from ..control.protocol import RequestError

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


async def run(arbiter, params: dict, writer):
    lines = arbiter.logs.tail(params["lines"])
    if not params["follow"] or writer is None:
        return {"lines": lines}
    import asyncio
    writer.write(protocol.ok({"lines": lines}))
    queue: asyncio.Queue = asyncio.Queue(10_000)

    def push(entry: dict) -> None:
        try:
            queue.put_nowait(entry)
        except asyncio.QueueFull:
            pass

    arbiter.logs.followers.add(push)
    try:
        while not writer.is_closing():
            entry = await queue.get()
            writer.write(protocol.ok({"lines": [entry]}))
            await writer.drain()
    finally:
        arbiter.logs.followers.discard(push)
    return protocol.STREAMED
