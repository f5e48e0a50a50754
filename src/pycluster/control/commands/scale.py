"""scale: ``{"workers": N}`` or ``{"delta": +-N}``."""

from __future__ import annotations

from typing import Any

from ...errors import EXIT_USAGE, ControlError
from ..protocol import RequestError

NAME = "scale"
HELP = "Set the number of workers: N, or +N / -N relative to now."
MAX_WORKERS = 4096


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    workers, delta = request.get("workers"), request.get("delta")
    if (workers is None) == (delta is None):
        raise RequestError("bad_request", "scale needs exactly one of 'workers' (N) or 'delta' (+-N)")
    value = workers if workers is not None else delta
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("bad_request", f"scale: {value!r} is not an integer")
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise RequestError("bad_request", f"scale: workers must be 0-{MAX_WORKERS}, not {workers}")
    if delta is not None and abs(delta) > MAX_WORKERS:
        raise RequestError("bad_request", f"scale: delta must be within +-{MAX_WORKERS}")
    return {"workers": workers, "delta": delta}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> dict[str, Any]:
    if arbiter.state == "stopping":
        raise RequestError("stopping", "the cluster is stopping")
    target = params["workers"] if params["workers"] is not None else arbiter.wanted + params["delta"]
    before = arbiter.wanted
    after = arbiter.scale(target)
    arbiter.logs.master(f"scale: {before} -> {after} workers")
    return {"workers_wanted": after, "was": before}


# -- in the client ---------------------------------------------------------------------
def request(count: str) -> dict[str, Any]:
    """``N`` sets the number, ``+N`` / ``-N`` changes it (ControlError, exit 2, otherwise)."""
    text = count.strip()
    try:
        value = int(text)
    except ValueError:
        raise ControlError(f"scale: {count!r} is not N, +N or -N", EXIT_USAGE) from None
    return {"cmd": NAME, ("delta" if text[:1] in "+-" else "workers"): value}


def render(result: dict[str, Any]) -> str:
    return f"workers: {result['was']} -> {result['workers_wanted']}"

