"""The terminal views (rich is imported here and nowhere else).

Colour only on a terminal (rich decides from isatty, ``TERM=dumb``, ``FORCE_COLOR``);
``NO_COLOR`` turns it off everywhere.
"""

from __future__ import annotations

import os
from typing import Any


def console(**kwargs: Any):
    from rich.console import Console
    return Console(no_color=bool(os.environ.get("NO_COLOR")), highlight=False, **kwargs)


def print_status(status: dict[str, Any]) -> None:
    from .view import status_view
    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 120)  # a pipe or file: do not squeeze the columns to 80
    out.print(status_view(status))


def watch(path: str) -> int:
    """`pycluster top`: the live dashboard until `q` or Ctrl-C (exit status 0)."""
    from .live import run_live
    return run_live(path, console())


def reload_bar():
    """A progress bar over a reload's replacements, or None off a terminal (the caller prints lines)."""
    out = console()
    if not out.is_terminal:
        return None
    from .progress import ReloadBar
    return ReloadBar(out)


__all__ = ["print_status", "watch", "reload_bar", "console"]
