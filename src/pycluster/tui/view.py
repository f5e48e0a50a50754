"""Pure view functions: status JSON in, rich renderables out (snapshot-testable)."""

from __future__ import annotations

from typing import Any

STATE_STYLES = {"listening": "green", "online": "cyan", "starting": "yellow", "disconnecting": "magenta",
                "dead": "red", "crash-looping": "bold red", "running": "green", "reloading": "yellow",
                "stopping": "magenta"}


def fmt_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt_listener(item: dict[str, Any]) -> str:
    if item.get("address_type") == -1:
        return f"unix:{item.get('address')}"
    host = item.get("address") or ""
    prefix = "udp://" if isinstance(item.get("address_type"), str) else ""
    return f"{prefix}[{host}]:{item.get('port')}" if ":" in host else f"{prefix}{host}:{item.get('port')}"


def fmt_exit(last: dict[str, Any] | None) -> str:
    if not last:
        return "-"
    return last.get("signal") or f"code {last.get('code')}"


def header_text(status: dict[str, Any]) -> str:
    listeners = ", ".join(fmt_listener(x) for x in status.get("listeners", [])) or "none"
    return (f"{status.get('name')}  master pid {status.get('pid')}  state {status.get('state')}  "
            f"policy {status.get('policy')}  generation {status.get('generation')}  "
            f"uptime {fmt_uptime(status.get('uptime_s'))}\nlisteners: {listeners}   "
            f"workers: {sum(1 for w in status.get('workers', []) if w.get('state') == 'listening')}"
            f"/{status.get('workers_wanted')} serving")


def status_table(status: dict[str, Any], rates: dict[int, float] | None = None):
    from rich.table import Table
    from rich.text import Text

    state = status.get("state", "")
    table = Table(title=Text(header_text(status)), title_justify="left", expand=False)
    for col, justify in (("worker", "right"), ("pid", "right"), ("gen", "right"), ("state", "left"),
                         ("uptime", "right"), ("cpu %", "right"), ("rss", "right"),
                         ("conns", "right"), ("restarts", "right"), ("last exit", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    if rates is not None:
        table.add_column("conn/s", justify="right")
    for w in status.get("workers", []):
        st = w.get("state", "")
        row = [str(w.get("id") if w.get("id") is not None else "-"), str(w.get("pid") or "-"),
               str(w.get("generation", "-")), Text(st, style=STATE_STYLES.get(st, "")),
               fmt_uptime(w.get("uptime_s")),
               "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.1f}",
               fmt_bytes(w.get("rss_bytes")),
               "-" if w.get("connections") is None else str(w["connections"]),
               str(w.get("restarts", 0)), fmt_exit(w.get("last_exit"))]
        if rates is not None:
            rate = rates.get(w.get("id")) if w.get("id") is not None else None
            row.append("-" if rate is None else f"{rate:.0f}")
        table.add_row(*row)
    table.caption = Text(f"state: {state}", style=STATE_STYLES.get(state, ""))
    return table
