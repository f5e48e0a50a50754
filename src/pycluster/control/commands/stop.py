"""stop: graceful stop (``{"now": true}``: at once)."""

from __future__ import annotations

import os
import time
from typing import Any

from ...errors import EXIT_FAILED, ControlError
from ..client import Echo, call
from ..protocol import RequestError

NAME = "stop"
HELP = "Stop the master gracefully and wait until it has exited."
_POLL = 0.05  # seconds between checks that the master has exited


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    now = request.get("now", False)
    if not isinstance(now, bool):
        raise RequestError("bad_request", "'now' must be true or false")
    return {"now": now}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> dict[str, Any]:
    arbiter.loop.call_soon(lambda: arbiter.stop(immediate=params["now"]))
    return {"stopping": True, "pid": os.getpid()}


# -- in the client ---------------------------------------------------------------------
def request(now: bool = False) -> dict[str, Any]:
    return {"cmd": NAME, "now": True} if now else {"cmd": NAME}


def client(path: str, echo: Echo, *, timeout: float | None = None) -> None:
    """Ask the master to stop, then wait (at most ``timeout`` s) until its process is gone."""
    result = call(path, request())
    pid = result.get("pid")
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid and alive(pid):
        if deadline is not None and time.monotonic() > deadline:
            raise ControlError(f"master {pid} still running after {timeout:g}s", EXIT_FAILED)
        time.sleep(_POLL)
    echo(f"stopped (master pid {pid})")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
