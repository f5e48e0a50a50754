"""reopen: reopen the log file (SIGUSR1, for logrotate; no CLI verb)."""

from __future__ import annotations

from typing import Any

from ..protocol import RequestError

NAME = "reopen"


def validate(request: dict[str, Any]) -> dict[str, Any]:
    return {}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> dict[str, Any]:
    failure = arbiter.logs.reopen()  # a failure is logged; the old file is kept
    if failure is not None and writer is not None:  # (SIGUSR1 has nobody else to tell)
        raise RequestError("reopen_failed", failure)
    return {"reopened": True}
