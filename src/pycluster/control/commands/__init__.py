"""Control commands: one module each, holding its request shape, its
execution and its help. A signal, a control request and an API call all run
through :func:`execute` on the master loop (STYLE habit 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import protocol
from . import logs, reload, reopen, scale, status, stop

if TYPE_CHECKING:
    import asyncio

COMMANDS = {m.NAME: m for m in (status, stop, scale, logs, reload, reopen)}


def _check(request: dict) -> Any:
    cmd = request.get("cmd")
    module = COMMANDS.get(cmd)
    if module is None:
        raise protocol.RequestError("unknown_command",
                                    f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    return module, module.validate(request)


async def execute(arbiter, request: dict) -> Any:
    """Run a command from inside the master (signals); errors are logged."""
    try:
        module, params = _check(request)
        return await module.run(arbiter, params, None)
    except protocol.RequestError as exc:
        arbiter.logs.master(f"{request.get('cmd')}: {exc.message}")
    return None


async def serve_request(arbiter, request: dict, writer: asyncio.StreamWriter) -> bool:
    """Answer one control request; True to keep the connection open."""
    try:
        module, params = _check(request)
    except protocol.RequestError as exc:
        writer.write(protocol.error(exc.code, exc.message))
        return False
    try:
        result = await module.run(arbiter, params, writer)
    except protocol.RequestError as exc:
        writer.write(protocol.error(exc.code, exc.message))
        return not exc.fatal
    if result is not protocol.STREAMED:
        writer.write(protocol.ok(result))
    return True
