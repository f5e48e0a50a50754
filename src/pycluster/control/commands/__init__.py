"""Control commands: one module per verb (status, stop, scale, logs, reload,
reopen), each holding its request schema (``validate``), its execution on the
master (``run``), its help (``HELP``, the click command's) and its client
side (building the request, rendering the reply). Adding a verb: one module
here, one entry in :data:`COMMANDS`, one click command in ``cli/``.

A signal, a control request and an API call all run through :func:`execute`
or :func:`serve_request` on the master loop (STYLE habit 2). Neither lets an
exception escape: a bug in a command becomes an ``internal`` error reply
(or, for a signal, a log line) with the traceback in the master's log, and the
master keeps serving (STYLE habit 14).
"""

from __future__ import annotations

import traceback
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import protocol
from . import logs, reload, reopen, scale, status, stop

if TYPE_CHECKING:
    import asyncio

COMMANDS: dict[str, ModuleType] = {m.NAME: m for m in (status, stop, scale, logs, reload, reopen)}


def check(request: dict[str, Any]) -> tuple[ModuleType, dict[str, Any]]:
    """The command a request names and its validated parameters (RequestError if none)."""
    cmd = request.get("cmd")
    module = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if module is None:
        raise protocol.RequestError("unknown_command",
                                    f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    params: dict[str, Any] = module.validate(request)
    return module, params


_check = check  # the fuzz tests' name


def log_internal(arbiter: Any, where: str, exc: BaseException) -> str:
    """Put ``exc``'s traceback in the master's log; the one-line message for a reply."""
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")
    try:
        arbiter.logs.master(f"internal error in {where}:\n{trace}")
    except Exception:  # noqa: BLE001 - the log itself failing must not hide the first error
        traceback.print_exc()
    return f"internal error in {where}: {type(exc).__name__}: {exc} (the traceback is in the master's log)"


async def execute(arbiter: Any, request: dict[str, Any]) -> Any:
    """Run a command from inside the master (signals); errors are logged."""
    try:
        module, params = check(request)
        return await module.run(arbiter, params, None)
    except protocol.RequestError as exc:
        arbiter.logs.master(f"{request.get('cmd')}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - habit 14: logged, never lost in a task
        log_internal(arbiter, f"the {request.get('cmd')!r} command", exc)
    return None


async def serve_request(arbiter: Any, request: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
    """Answer one control request; True to keep the connection open."""
    try:
        module, params = check(request)
    except protocol.RequestError as exc:
        writer.write(protocol.error(exc.code, exc.message))
        return False
    try:
        result = await module.run(arbiter, params, writer)
        if result is not protocol.STREAMED:
            writer.write(protocol.ok(result))
    except protocol.RequestError as exc:
        writer.write(protocol.error(exc.code, exc.message))
        return not exc.fatal
    except Exception as exc:  # noqa: BLE001 - habit 14: an `internal` reply, the traceback logged
        message = log_internal(arbiter, f"the {module.NAME!r} command", exc)
        if not writer.is_closing():
            writer.write(protocol.error("internal", message))
        return False  # what a failed command left on the connection is unknown: close it
    return True
