"""Log lines people and log shippers can read (issue 15, item 3).

1. ``--log-format text`` (the default): every line starts with an ISO 8601 time
   with its UTC offset, on the terminal, in ``--log-file`` and in ``pycluster logs``;
   the ``[worker N]`` / ``[pycluster]`` prefix follows it.
2. ``--log-format json``: one JSON object per line (time, source, worker, pid, stream,
   line) on the terminal and in the log file; a served app's access log (its stdout)
   is one of them.
"""

from __future__ import annotations

import json
import os
import re
import signal
from datetime import datetime, timedelta

import pytest

from cli_support import IDLE_APP, http_get, pyc, untimed, unused_port, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(60)

KEYS = {"time", "source", "worker", "pid", "stream", "line"}

CHATTY_APP = """
    import sys
    import threading

    def main():
        print("chatty out", flush=True)
        print("chatty err", file=sys.stderr, flush=True)
        threading.Event().wait()
"""

ASGI_APP = """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hi"})
"""


def stamped(line: str, started: datetime) -> datetime:
    """The time a text line starts with (checked: an offset, and about now)."""
    head = line.split(" ", 1)[0]
    when = datetime.fromisoformat(head)
    assert when.tzinfo is not None, line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", head), line
    assert started - timedelta(seconds=1) <= when <= datetime.now().astimezone() + timedelta(seconds=1), line
    return when


def test_text_lines_start_with_a_time_on_the_terminal_and_in_logs(pyc):
    started = datetime.now().astimezone()
    pyc.write("chatty_app.py", CHATTY_APP)
    master = pyc.start("chatty_app:main", "-w", "2")
    master.wait_ready()
    master.wait_line(r"^\[worker 2\] chatty err$")
    terminal = list(master.raw_stdout)
    assert terminal, master.output()
    for line in terminal:
        stamped(line, started)
    assert any(re.search(r" \[worker 1\] chatty out$", ln) for ln in terminal), terminal
    assert any(re.search(r" \[pycluster\] .*ready", ln) for ln in terminal), terminal

    out = pyc.cli("logs", "-n", "app", "--lines", "100")
    assert out.returncode == 0, out.stderr
    shown = out.stdout.splitlines()
    times = [stamped(line, started) for line in shown]
    assert times == sorted(times), shown
    # The same lines, with the same times, as the terminal got.
    assert set(shown) <= set(terminal), (shown, terminal)
    assert "[worker 2] chatty err" in map(untimed, shown), shown


def test_text_lines_in_the_log_file_start_with_a_time(pyc):
    started = datetime.now().astimezone()
    pyc.write("idle_app.py", IDLE_APP)
    log = pyc.dir / "app.log"
    master = pyc.start("idle_app:main", "-w", "1", "--log-file", log)
    wait_until(lambda: log.exists() and "ready: 1 worker" in log.read_text(), 15, "the ready line in the log file",
               master.output)
    wait_until(lambda: "[worker 1] idle worker up" in log.read_text(), 5, "the worker's line", master.output)
    lines = log.read_text().splitlines()
    for line in lines:
        stamped(line, started)
    assert any(untimed(ln) == "[worker 1] idle worker up" for ln in lines), lines


def test_json_lines_on_the_terminal_and_in_the_log_file_access_log_included(pyc):
    started = datetime.now().astimezone()
    pyc.write("asgi_app.py", ASGI_APP)
    port = unused_port()
    log = pyc.dir / "app.log"
    args = ("asgi_app:app", "-w", "1", "-b", f"127.0.0.1:{port}", "--access-log", "--log-format", "json")
    master = pyc.start(*args, "--graceful-timeout", "5")
    master.wait_ready()
    status, _headers, body = http_get(port)
    assert (status, body) == (200, b"hi")
    master.wait_line(r'"GET / HTTP/1\.1\\" 200 ')
    worker_pid = master.status()["workers"][0]["pid"]

    def parsed(lines: list[str]) -> list[dict]:
        objects = [json.loads(line) for line in lines]
        for obj in objects:
            assert set(obj) == KEYS, obj
            assert stamped(obj["time"], started)
            assert obj["source"] in ("master", "worker"), obj
            assert (obj["source"] == "master") == (obj["worker"] is None) == (obj["stream"] == "master"), obj
            assert isinstance(obj["pid"], int) and isinstance(obj["line"], str), obj
        return objects

    terminal = parsed(list(master.raw_stdout))
    access = [o for o in terminal if re.search(r'"GET / HTTP/1\.1" 200 [0-9.]+ms$', o["line"])]
    assert len(access) == 1, terminal
    assert access[0]["source"] == "worker" and access[0]["worker"] == 1, access
    assert access[0]["stream"] == "stdout" and access[0]["pid"] == worker_pid, access
    ready = [o for o in terminal if "ready: 1 worker" in o["line"]]
    assert ready and ready[0]["pid"] == master.pid and ready[0]["worker"] is None, terminal
    os.kill(master.pid, signal.SIGTERM)
    assert master.wait_exit() == 0

    # The same format in the log file (nothing on the terminal then).
    master = pyc.start(*args, "--log-file", log, name="app2")
    wait_until(lambda: log.exists() and "ready: 1 worker" in log.read_text(), 15, "the ready line in the log file",
               master.output)
    assert http_get(port)[0] == 200
    wait_until(lambda: "GET / HTTP/1.1" in log.read_text(), 5, "the access line in the log file", master.output)
    objects = parsed(log.read_text().splitlines())
    assert any(o["worker"] == 1 and o["stream"] == "stdout" and "GET / HTTP/1.1" in o["line"] for o in objects)


def test_a_bad_log_format_is_a_config_error(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    out = pyc.cli("run", "idle_app:main", "--log-format", "xml", timeout=10)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "--log-format" in out.stderr and "text or json" in out.stderr, out.stderr
