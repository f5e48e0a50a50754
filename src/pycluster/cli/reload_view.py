"""`pycluster reload --wait`: follow the reply stream while the workers are replaced.

The master sends one ``{"progress": {replaced, total, worker, pid}}`` reply per
replaced worker, then the result (or an error). On a terminal that drives a
progress bar (tui.reload_bar); anywhere else each reply is a plain line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import click


def follow_reload(path: str) -> int:
    from ..control.client import NoMaster, stream
    from ..tui import reload_bar
    bar = reload_bar()
    try:
        with bar or contextlib.nullcontext():  # the bar is gone before the outcome is printed
            code, message = _follow(stream(path, {"cmd": "reload", "wait": True}), bar)
    except NoMaster as exc:
        code, message = 3, f"pycluster: {exc}"
    except OSError as exc:  # the master died mid-reload
        code, message = 1, f"pycluster: lost the master during the reload: {exc}"
    click.echo(message, err=code != 0)
    return code


def _follow(replies: Iterable[dict[str, Any]], bar: Any) -> tuple[int, str]:
    for reply in replies:
        if not reply.get("ok"):
            return 1, f"pycluster: reload failed: {(reply.get('error') or {}).get('message')}"
        result = reply.get("result") or {}
        progress = result.get("progress")
        if not progress:
            notes = "".join(f"\nnote: {note}" for note in result.get("notes") or ())
            return 0, (f"reloaded: generation {result.get('generation')}, {result.get('replaced')} workers"
                       f" in {result.get('seconds')}s{notes}")
        if bar is not None:
            bar.advance(progress)
        else:
            click.echo(f"replaced {progress['replaced']}/{progress['total']}"
                       f" (worker {progress['worker']}, pid {progress['pid']})")
    return 1, "pycluster: the master closed the connection during the reload"
