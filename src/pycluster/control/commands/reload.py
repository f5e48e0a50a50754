"""reload: rolling, generation-numbered replacement of every worker.

``reload --wait`` streams one ``{"progress": {...}}`` reply per replaced
worker, then the result; without ``wait`` the reply says the reload started.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..protocol import RequestError

if TYPE_CHECKING:
    from ...master.reload import Progress

NAME = "reload"
HELP = "Replace every worker with one running freshly loaded code, one at a time."


def validate(request: dict[str, Any]) -> dict[str, Any]:
    wait = request.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("bad_request", "'wait' must be true or false")
    return {"wait": wait}


async def run(arbiter: Any, params: dict[str, Any], writer: asyncio.StreamWriter | None) -> dict[str, Any]:
    from ...master.reload import RollingReload
    wait = params["wait"]
    reload = RollingReload(arbiter, on_progress=ProgressLines(writer).send if wait else None)
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
