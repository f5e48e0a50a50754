"""status: the master's state as SPEC section 5's JSON.

The human rendering (a table) is the terminal UI's (``tui.print_status``):
the control layer draws nothing.
"""

from __future__ import annotations

import json
from typing import Any

from ..client import Echo, call

NAME = "status"
HELP = "Show the master and its workers; exit 3 when no master answers."
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
