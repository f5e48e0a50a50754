"""scale: ``{"workers": N}`` or ``{"delta": +-N}``."""

from ..protocol import RequestError

NAME = "scale"
HELP = "Set the number of workers (N, +N or -N)."
MAX_WORKERS = 4096


def validate(request: dict) -> dict:
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


async def run(arbiter, params: dict, writer) -> dict:
    if arbiter.state == "stopping":
        raise RequestError("stopping", "the cluster is stopping")
    target = params["workers"] if params["workers"] is not None else arbiter.wanted + params["delta"]
    before = arbiter.wanted
    after = arbiter.scale(target)
    arbiter.logs.master(f"scale: {before} -> {after} workers")
    return {"workers_wanted": after, "was": before}
