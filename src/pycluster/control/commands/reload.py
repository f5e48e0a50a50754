"""reload: rolling, generation-numbered replacement of every worker.

``reload --wait`` streams one ``{"progress": {...}}`` reply per replaced
worker, then the result; without ``wait`` the reply says the reload started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...core.common import plural
from ...errors import EXIT_FAILED, EXIT_OK
from .. import protocol
from ..client import Echo, call
from ..protocol import RequestError

if TYPE_CHECKING:
    from ...master.reload import Progress

NAME = "reload"
HELP = "Rolling reload: replace every worker with freshly loaded code."


# -- on the master ---------------------------------------------------------------------
def validate(request: dict[str, Any]) -> dict[str, Any]:
    wait = request.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("bad_request", "'wait' must be true or false")
    return {"wait": wait}


async def run(arbiter: Any, params: dict[str, Any], writer: asyncio.StreamWriter | None) -> dict[str, Any]:
    wait = params["wait"]
    reload = arbiter.rolling_reload(on_progress=ProgressLines(writer).send if wait else None)
    reload.start()  # busy, not_running, bad_config: before any worker is touched
    if not wait:
        return {"generation": reload.generation, "started": True, "notes": list(reload.notes)}
    try:
        result = await reload.result()  # cancelling this request leaves the reload running
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - logged with its traceback by the master's keep_task
        raise RequestError("internal", f"the reload failed: {exc!r} (traceback in the master's log)") from None
    if not result.ok:
        raise RequestError("reload_failed", result.message)
    return {**result.as_dict(), "notes": list(reload.notes)}


class ProgressLines:
    """``reload --wait``'s progress lines. Written, never awaited: the reload
    neither waits for its client nor stops with it (a client gone quiet gets
    no more lines; there are only as many as workers)."""

    def __init__(self, writer: asyncio.StreamWriter | None):
        self.writer = writer

    def send(self, progress: Progress) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            if writer.is_closing():
                raise ConnectionError("the client hung up")
            writer.write(protocol.ok({"progress": {"replaced": progress.replaced, "total": progress.total,
                                                   "worker": progress.worker, "pid": progress.pid}}))
        except (ConnectionError, OSError, RuntimeError):
            self.writer = None
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
            replaced = plural(result.get("replaced") or 0, "worker")
            return EXIT_OK, (f"reloaded: generation {result.get('generation')}, {replaced}"
                             f" in {result.get('seconds')}s{notes}")
        on_progress(progress)
    return EXIT_FAILED, "pycluster: the master closed the connection during the reload"
