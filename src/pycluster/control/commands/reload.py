"""reload: rolling, generation-numbered replacement of every worker.

With ``wait`` the master streams one ``{"progress": {replaced, total, worker,
pid}}`` reply per replaced worker, then the result (or an error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ...errors import EXIT_FAILED, EXIT_OK
from ..client import Echo, call
from ..protocol import RequestError

NAME = "reload"
HELP = "Rolling reload: replace every worker with freshly loaded code."


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    wait = request.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("bad_request", "'wait' must be true or false")
    return {"wait": wait}


async def run(arbiter: Any, params: dict[str, Any], writer: Any) -> dict[str, Any]:
    from ...master.reload import rolling_reload
    result: dict[str, Any] = await rolling_reload(arbiter, wait=params["wait"], writer=writer)
    return result


# -- in the client ---------------------------------------------------------------------
def request(wait: bool) -> dict[str, Any]:
    return {"cmd": NAME, "wait": wait}


def start(path: str, echo: Echo) -> None:
    """``reload --no-wait``: start it and say which generation comes."""
    result = call(path, request(False))
    echo(f"reload to generation {result['generation']} started")
    for note in result.get("notes") or ():
        echo(f"note: {note}")


def progress_line(progress: dict[str, Any]) -> str:
    return (f"replaced {progress['replaced']}/{progress['total']}"
            f" (worker {progress['worker']}, pid {progress['pid']})")


def follow(replies: Iterable[dict[str, Any]], on_progress: Callable[[dict[str, Any]], None]) -> tuple[int, str]:
    """Follow ``reload --wait``'s reply stream: (exit status, the outcome's message)."""
    for reply in replies:
        if not reply.get("ok"):
            return EXIT_FAILED, f"pycluster: reload failed: {(reply.get('error') or {}).get('message')}"
        result = reply.get("result") or {}
        progress = result.get("progress")
        if not progress:
            notes = "".join(f"\nnote: {note}" for note in result.get("notes") or ())
            return EXIT_OK, (f"reloaded: generation {result.get('generation')}, {result.get('replaced')} workers"
                             f" in {result.get('seconds')}s{notes}")
        on_progress(progress)
    return EXIT_FAILED, "pycluster: the master closed the connection during the reload"
