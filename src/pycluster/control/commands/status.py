"""status: the master's state as JSON (SPEC section 5), and ``status --check``.

The human rendering (a table) is the terminal UI's (``tui.print_status``):
the control layer draws nothing.
"""

from __future__ import annotations

import json
from typing import Any

from ...core.common import plural
from ...errors import EXIT_FAILED, EXIT_OK
from ..client import Echo, call

NAME = "status"
HELP = ("Show the master and its workers; exit 3 when no master answers. With --check, a health check "
        "(Docker HEALTHCHECK, exec probes): exit 0 when every wanted worker is ready, 1 when not "
        "(one line says which count is short).")
SERVING = ("running", "reloading")  # master states in which a generation serves
TIMEOUT = 5.0  # status answers in milliseconds; a master silent this long is stopped or hung


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    return {}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> dict[str, Any]:
    result: dict[str, Any] = arbiter.status()
    return result


# -- in the client ---------------------------------------------------------------------
def request() -> dict[str, Any]:
    return {"cmd": NAME}


def fetch(path: str) -> dict[str, Any]:
    """The status JSON (ControlError, exit 3, when no master answers within TIMEOUT)."""
    result: dict[str, Any] = call(path, request(), timeout=TIMEOUT)
    return result


def print_json(result: dict[str, Any], echo: Echo) -> None:
    echo(json.dumps(result))


def check(result: dict[str, Any]) -> tuple[int, str]:
    """``status --check``: (EXIT_OK, a line) when every wanted worker is ready
    (readiness as the master judged it: listening on all its listeners, or
    online for a master without listeners), else (EXIT_FAILED, the count that
    is short)."""
    name, state = result.get("name"), result.get("state")
    wanted = int(result.get("workers_wanted") or 0)
    ready = sum(1 for worker in result.get("workers") or () if worker.get("ready"))
    counts = f"{ready} of {plural(wanted, 'worker')} ready"
    if state not in SERVING:
        return EXIT_FAILED, f"{name}: not ready: the master is {state} ({counts})"
    if wanted == 0:
        return EXIT_FAILED, f"{name}: not ready: 0 workers wanted (paused by `pycluster scale 0`)"
    if ready < wanted:
        return EXIT_FAILED, f"{name}: not ready: {counts}"
    return EXIT_OK, f"{name}: {counts}"
