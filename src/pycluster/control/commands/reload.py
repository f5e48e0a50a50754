"""reload: rolling, generation-numbered replacement of every worker."""

from ..protocol import RequestError

NAME = "reload"
HELP = "Replace every worker with one running freshly loaded code, one at a time."


def validate(request: dict) -> dict:
    wait = request.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("bad_request", "'wait' must be true or false")
    return {"wait": wait}


async def run(arbiter, params: dict, writer) -> dict:
    from ...master.reload import rolling_reload
    return await rolling_reload(arbiter, wait=params["wait"], writer=writer)
