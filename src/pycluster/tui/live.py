"""`pycluster top` / `status --watch`: a live dashboard (issue: the face of it)."""

from __future__ import annotations

import time
from typing import Any


def run_live(path: str, console: Any) -> int:
    from rich.live import Live

    from ..control.client import NoMaster, request
    from .view import status_table

    last: dict[int, tuple[float, int]] = {}
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                try:
                    status = request(path, {"cmd": "status"}, timeout=2.0)["result"]
                except (NoMaster, OSError, KeyError, ValueError):
                    from rich.text import Text
                    live.update(Text(f"no master answers on {path}; retrying..."))
                    time.sleep(1.0)
                    continue
                now = time.monotonic()
                rates = {}
                for w in status.get("workers", []):
                    wid, conns = w.get("id"), w.get("connections")
                    if wid is None or conns is None:
                        continue
                    if wid in last:
                        t0, c0 = last[wid]
                        rates[wid] = (conns - c0) / max(now - t0, 1e-6)
                    last[wid] = (now, conns)
                live.update(status_table(status, rates))
                time.sleep(1.0)
        except KeyboardInterrupt:
            return 0
