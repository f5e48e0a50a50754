"""status: the master's state as SPEC section 5's JSON."""

NAME = "status"
HELP = "Show the master, its listeners and every worker."


def validate(request: dict) -> dict:
    return {}


async def run(arbiter, params: dict, writer) -> dict:
    return arbiter.status()
