"""reopen: reopen the log file (SIGUSR1; for logrotate)."""

NAME = "reopen"
HELP = "Reopen the log file."


def validate(request: dict) -> dict:
    return {}


async def run(arbiter, params: dict, writer) -> dict:
    arbiter.logs.reopen()
    return {"reopened": True}
