"""The terminal views (rich is imported here and nowhere else)."""

from __future__ import annotations

import os
import sys
from typing import Any

from .view import status_table


def _console(**kwargs: Any):
    from rich.console import Console
    no_color = bool(os.environ.get("NO_COLOR"))
    return Console(no_color=no_color, highlight=False, **kwargs)


def print_status(status: dict[str, Any]) -> None:
    console = _console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a pipe or file: do not squeeze the columns to 80
    console.print(status_table(status))


def watch(path: str) -> int:
    from .live import run_live
    return run_live(path, _console())


__all__ = ["print_status", "watch", "status_table"]
