"""stop: graceful stop (``{"now": true}``: at once)."""

import os

from ..protocol import RequestError

NAME = "stop"
HELP = "Stop the cluster gracefully (now=true: kill at once)."


def validate(request: dict) -> dict:
    now = request.get("now", False)
    if not isinstance(now, bool):
        raise RequestError("bad_request", "'now' must be true or false")
    return {"now": now}


async def run(arbiter, params: dict, writer) -> dict:
    arbiter.loop.call_soon(lambda: arbiter.stop(immediate=params["now"]))
    return {"stopping": True, "pid": os.getpid()}
