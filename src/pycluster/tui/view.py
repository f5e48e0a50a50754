"""Pure view functions: status JSON (plus history and log lines) in, rich renderables out.

Nothing here does I/O or reads a clock, so the tests render these with a
fixed-width Console and compare text. ``live.py`` and the CLI do the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .history import History

BLOCKS = "▁▂▃▄▅▆▇█"
STATE_STYLES = {"listening": "green", "online": "cyan", "starting": "yellow", "disconnecting": "magenta",
                "dead": "red", "crash-looping": "bold red", "running": "green", "reloading": "yellow",
                "stopping": "magenta"}
KEYS = (("r", "reload"), ("+", "add a worker"), ("-", "remove a worker"), ("q", "quit"))
SPARK_MIN, SPARK_MAX = 9, 30  # at least as wide as the column headers
TABLE_WIDTH = 89  # the dashboard's worker table without its sparklines (7-digit pids, 1023.0 MiB ...)
TOTAL_SPARK = 20


def sparkline(values: Sequence[float | None], width: int | None = None, hi: float | None = None) -> str:
    """One block character per value (None: a blank), scaled 0..hi (default: the largest value).

    More values than ``width``: each character shows the mean of an equal share of them."""
    if width is not None and len(values) > width > 0:
        n = len(values)
        buckets = [[v for v in values[i * n // width:(i + 1) * n // width] if v is not None]
                   for i in range(width)]
        values = [sum(b) / len(b) if b else None for b in buckets]
    top = max((v for v in values if v is not None), default=0.0) if hi is None else hi
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, max(0, round(v / top * (len(BLOCKS) - 1))))])
    return "".join(out)


# -- formatting ----------------------------------------------------------------------------------------

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


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


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


def _dash(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _state(state: str | None) -> Text:
    return Text(state or "-", style=STATE_STYLES.get(state or "", ""))


def serving(status: dict[str, Any]) -> int:
    return sum(1 for w in status.get("workers", []) if w.get("state") == "listening")


# -- pycluster status ----------------------------------------------------------------------------------

def header(status: dict[str, Any], with_serving: bool = True) -> Text:
    """Name, state, master pid, policy, generation, uptime; then listeners, workers serving, target."""
    apps = [f"{fmt_listener(x)} (bound by the app)" for x in status.get("app_listeners", [])]
    listeners = ", ".join([*(fmt_listener(x) for x in status.get("listeners", [])), *apps]) or "none"
    workers = f"  workers {serving(status)}/{status.get('workers_wanted')} serving" if with_serving else ""
    text = Text.assemble((str(status.get("name")), "bold"), "  ", _state(status.get("state")),
                         f"  master pid {status.get('pid')}  policy {status.get('policy')}"
                         f"  generation {status.get('generation')}  uptime {fmt_uptime(status.get('uptime_s'))}\n"
                         f"listeners {listeners}{workers}  target {status.get('target')}")
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def worker_table(status: dict[str, Any], history: History | None = None, spark: int = 0) -> Table:
    """One row per worker; with a history also conn/s, and sparklines ``spark`` characters wide (0: none)."""
    table = Table(box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    columns = ["id", "pid", "gen", "state", "uptime", "cpu %", "rss", "conns", "restarts", "last exit"]
    if history is not None:
        columns[8:8] = ["conn/s"] + (["conn/s 1m"] if spark else [])
        columns[6:6] = ["cpu 1m"] if spark else []
    for name in columns:
        left = name in ("state", "last exit") or name.endswith(" 1m")
        table.add_column(name, justify="left" if left else "right", no_wrap=True,
                         min_width=spark if name.endswith(" 1m") else None)
    workers = status.get("workers", [])
    hi = max((r for w in workers for r in (history.rates(w.get("id")) if history else ()) if r is not None),
             default=0.0)
    for w in workers:
        wid = w.get("id")
        row: list[Any] = [_dash(wid), _dash(w.get("pid")), _dash(w.get("generation")), _state(w.get("state")),
                          fmt_uptime(w.get("uptime_s")), _dash(w.get("cpu_percent"), "{:.1f}"),
                          fmt_bytes(w.get("rss_bytes")), _dash(w.get("connections")), str(w.get("restarts", 0)),
                          Text(fmt_exit(w.get("last_exit")), style="red" if w.get("last_exit") else "")]
        if history is not None:
            conn_spark = Text(sparkline(history.rates(wid), spark, hi=hi), style="green")
            row[8:8] = [fmt_rate(history.rate(wid))] + ([conn_spark] if spark else [])
            row[6:6] = [Text(sparkline(history.cpu(wid), spark, hi=100.0), style="cyan")] if spark else []
        table.add_row(*row)
    return table


def warnings(status: dict[str, Any]) -> list[Text]:
    """One line per worker the master holds back from (``warning`` in status)."""
    return [Text(f"worker {_dash(w.get('id'))}: {w['warning']}", style="yellow")
            for w in status.get("workers", []) if w.get("warning")]


def status_view(status: dict[str, Any]) -> RenderableType:
    """What `pycluster status` prints."""
    notes = warnings(status)
    return Group(header(status), Text(""), worker_table(status), *([Text("")] + notes if notes else []))


# -- pycluster top -------------------------------------------------------------------------------------

def totals(status: dict[str, Any], history: History) -> Text:
    workers = status.get("workers", [])
    rss = [w["rss_bytes"] for w in workers if w.get("rss_bytes") is not None]
    cpu = [w["cpu_percent"] for w in workers if w.get("cpu_percent") is not None]
    want = status.get("workers_wanted")
    looping = sum(1 for w in workers if w.get("state") == "crash-looping")
    return Text.assemble(
        ("workers ", "bold"), (f"{serving(status)}/{want} serving", "green" if serving(status) == want else "yellow"),
        ("   conn/s ", "bold"), fmt_rate(history.total_rate()), " ",
        (sparkline(history.total_rates(), TOTAL_SPARK), "green"),
        ("   rss ", "bold"), fmt_bytes(sum(rss) if rss else None),
        ("   cpu ", "bold"), f"{sum(cpu):.1f}%" if cpu else "-",
        (f"   {looping} crash-looping" if looping else "", "bold red"))


def log_panel(entries: Iterable[dict[str, Any]]) -> Text:
    """The master's recent lines as `pycluster logs` prints them; workers' stderr in red."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for entry in entries:
        who = "pycluster" if entry.get("worker") is None else f"worker {entry['worker']}"
        text.append("\n" if text else "").append(f"[{who}] {entry.get('line', '')}",
                                                  "red" if entry.get("stream") == "stderr" else "")
    return text if text else Text("(no log lines yet)", style="dim")


def footer(notice: str = "") -> Text:
    text = Text()
    for key, what in KEYS:
        text.append(key, "bold reverse").append(f" {what}  ")
    if notice:
        text.append("  ").append(notice, "yellow")
    return text


def spark_width(width: int) -> int:
    """Sparkline characters that leave the rest of the worker table room in ``width`` columns (0: none)."""
    spark = min(SPARK_MAX, (width - TABLE_WIDTH) // 2)
    return spark if spark >= SPARK_MIN else 0


def dashboard(status: dict[str, Any], history: History, logs: Sequence[dict[str, Any]] = (), *,
              width: int = 120, height: int | None = None, notice: str = "") -> RenderableType:
    """The whole `pycluster top` screen for one poll; the log lines give way when ``height`` is short."""
    spark = spark_width(width)
    if height is not None:
        room = max(0, height - 9 - len(status.get("workers", [])))  # 9: every line but workers and logs
        logs = list(logs)[-room:] if room else []
    return Group(header(status, with_serving=False), totals(status, history), Text(""),
                 worker_table(status, history, spark), Text("recent log", style="bold"), log_panel(logs),
                 Text(""), footer(notice))


def no_master(path: str, notice: str = "", since: float | None = None) -> RenderableType:
    """What `pycluster top` shows while nothing answers on the control socket."""
    gone = "" if since is None else f" (last answer {fmt_uptime(since)} ago)"
    return Group(Text(f"no master answers on {path}; retrying{gone}", style="bold red"), Text(""), footer(notice))
