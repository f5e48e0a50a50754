"""scale: ``{"workers": N}`` or ``{"delta": +-N}``.

``scale 0`` is allowed and pauses the cluster (``kubectl scale --replicas=0``):
the master keeps its listeners and control socket and serves nothing until
scaled up. ``run -w 0`` is refused: a first generation of no worker could
never become ready. A relative count that would leave the range is refused
with the arithmetic, never clamped.
"""

from __future__ import annotations

from typing import Any

from ...core.common import plural
from ...errors import EXIT_USAGE, ControlError
from ..protocol import RequestError

NAME = "scale"
HELP = ("Set the number of workers: N, or +N / -N relative to now. `scale 0` pauses the cluster "
        "(listeners kept, nothing served) until scaled up again.")
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
    before = arbiter.wanted
    target = params["workers"] if params["workers"] is not None else before + params["delta"]
    if not 0 <= target <= MAX_WORKERS:
        delta = params["delta"]
        limit = "the least is 0 (`pycluster scale 0` pauses the cluster, `pycluster stop` stops it)" \
            if target < 0 else f"the most is {MAX_WORKERS}"
        raise RequestError("bad_request", f"{delta:+d} would leave {before} {'-' if delta < 0 else '+'} "
                                          f"{abs(delta)} = {target} workers; {limit}")
    after = arbiter.scale(target)
    arbiter.logs.master(f"scale: {before} -> {plural(after, 'worker')}{' (paused)' if after == 0 else ''}")
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
    paused = " (paused: no worker runs until you scale up)" if result["workers_wanted"] == 0 else ""
    return f"workers: {result['was']} -> {result['workers_wanted']}{paused}"

