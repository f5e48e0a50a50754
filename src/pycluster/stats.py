"""Process statistics: the one place that imports psutil."""

from __future__ import annotations

from typing import Any


def process_for(pid: int) -> Any:
    """A psutil.Process for ``pid`` (None if it is already gone)."""
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
