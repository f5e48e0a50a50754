"""reopen: reopen the log file (SIGUSR1; for logrotate)."""

from ..protocol import RequestError

NAME = "reopen"
HELP = "Reopen the log file."


def validate(request: dict) -> dict:
    return {}


async def run(arbiter, params: dict, writer) -> dict:
    failure = arbiter.logs.reopen()  # a failure is logged; the old file is kept
    if failure is not None and writer is not None:  # (SIGUSR1 has nobody else to tell)
        raise RequestError("reopen_failed", failure)
    return {"reopened": True}
