"""The terminal UI's pure parts, rendered to text (SPEC section 6).

* ``sparkline`` maps a known series onto ▁▂▃▄▅▆▇█ (blanks for unknowns,
  downsampling to a width, a fixed scale);
* ``History`` turns successive connection counters into rates, keeps one
  minute, forgets retired workers and starts afresh for a new master;
* ``pycluster status`` (``status_view``): an exact snapshot of header and rows,
  colour only where asked for, 120 columns on a pipe with ``NO_COLOR``;
* ``pycluster top`` (``dashboard``): header, totals, per-worker rates and
  sparklines, log lines, the keys and the last action's notice; a crash-looping
  slot; sparklines dropped on a narrow terminal and log lines on a short one;
  the no-master screen;
* the live loop's terminal handling: cbreak only inside the block, restored
  even when it raises; keys read without blocking; the end of input is
  reported (the view ends); a missing master draws the no-master screen;
* the reload progress bar counts replacements.
"""

from __future__ import annotations

import copy
import io
import os
import pty
import termios

import pytest
from rich.console import Console

from pycluster.tui import print_status
from pycluster.tui.history import History
from pycluster.tui.live import Poller, cbreak, read_keys
from pycluster.tui.progress import ReloadBar
from pycluster.tui.view import dashboard, no_master, sparkline, status_view

STATUS = {
    "name": "shop", "pid": 4242, "version": "0.1.0", "state": "running", "policy": "rr", "generation": 3,
    "workers_wanted": 3, "uptime_s": 3725.0, "target": "shop.app:main",
    "listeners": [{"address": "127.0.0.1", "port": 8000, "address_type": 4},
                  {"address": "::1", "port": 8000, "address_type": 6},
                  {"address": "/run/shop.sock", "port": None, "address_type": -1}],
    "workers": [
        {"id": 7, "pid": 5001, "generation": 3, "state": "listening", "uptime_s": 65.2, "restarts": 0,
         "connections": 100, "cpu_percent": 12.5, "rss_bytes": 23_429_120, "last_exit": None},
        {"id": 8, "pid": 5002, "generation": 3, "state": "listening", "uptime_s": 4.25, "restarts": 2,
         "connections": 40, "cpu_percent": 3.0, "rss_bytes": 123_429_120,
         "last_exit": {"code": None, "signal": "SIGKILL", "at": 1.0}},
        {"id": None, "pid": None, "generation": 3, "state": "crash-looping", "uptime_s": 0.0, "restarts": 9,
         "connections": None, "cpu_percent": None, "rss_bytes": None,
         "last_exit": {"code": 1, "signal": None, "at": 1.0}}]}

LOGS = [{"t": 1.0, "worker": None, "stream": "master", "line": "scale: 2 -> 3 workers"},
        {"t": 2.0, "worker": 8, "stream": "stderr", "line": "Traceback (most recent call last):"},
        {"t": 3.0, "worker": 7, "stream": "stdout", "line": "GET / 200"}]


def render(renderable, width: int = 120, **kwargs) -> str:
    console = Console(width=width, record=True, no_color=True, file=io.StringIO(), **kwargs)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def fed_history(seconds: int = 8) -> tuple[History, dict]:
    """Worker 7 accepts 10 more connections each second (10/s, 20/s, ...); worker 8 a steady 5/s."""
    history, status = History(), copy.deepcopy(STATUS)
    for t in range(seconds):
        status["workers"][0]["connections"] = 100 + 5 * t * (t + 1)
        status["workers"][1]["connections"] = 40 + 5 * t
        status["workers"][0]["cpu_percent"] = 100.0 * t / (seconds - 1)
        history.update(copy.deepcopy(status), float(t))
    return history, status


# -- sparkline -----------------------------------------------------------------------------------------

def test_sparkline_maps_a_series_onto_the_eight_blocks():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0, 7]) == "█▁█"
    assert sparkline([]) == ""
    assert sparkline([0, 0, 0]) == "▁▁▁"  # nothing happening is the lowest bar, not a blank
    assert sparkline([None, 2, None, 7]) == " ▃ █"  # unknown samples are gaps


def test_sparkline_scale_and_width():
    assert sparkline([0, 50, 100, 150], hi=100) == "▁▅██"  # a fixed scale clips above it
    assert sparkline([0] * 30 + [7] * 30, width=2) == "▁█"  # each character: the mean of a share
    assert sparkline(list(range(60)), width=8) == "▁▂▃▄▅▆▇█"
    assert sparkline([1, 2, 3], width=10) == "▃▆█"  # fewer samples than room: one each


# -- history -------------------------------------------------------------------------------------------

def test_history_turns_counters_into_rates():
    history, _ = fed_history(4)
    assert history.rates(7) == [10.0, 20.0, 30.0]
    assert history.rate(7) == 30.0
    assert history.rates(8) == [5.0, 5.0, 5.0]
    assert history.total_rates() == [15.0, 25.0, 35.0]
    assert history.cpu(7)[-1] == 100.0
    assert history.rate(None) is None and history.rates(99) == []


def test_history_keeps_a_minute_and_forgets_retired_workers_and_old_masters():
    history, status = History(), copy.deepcopy(STATUS)
    for t in range(100):
        status["workers"][0]["connections"] = t
        history.update(copy.deepcopy(status), float(t))
    assert len(history.rates(7)) == 61  # samples from t=39..99: the last minute
    del status["workers"][0]
    history.update(copy.deepcopy(status), 100.0)
    assert history.rates(7) == [] and 7 not in history.samples
    restarted = dict(copy.deepcopy(STATUS), pid=999)  # a new master: ids and counters start again
    history.update(restarted, 101.0)
    history.update(restarted, 102.0)
    assert history.rates(8) == [0.0] and history.total_rates() == [0.0]


def test_history_never_shows_a_negative_rate_when_a_counter_goes_back():
    history, status = History(), copy.deepcopy(STATUS)
    history.update(copy.deepcopy(status), 0.0)
    status["workers"][0]["connections"] = 3
    history.update(status, 1.0)
    assert history.rates(7) == [None]


# -- pycluster status ----------------------------------------------------------------------------------

STATUS_SNAPSHOT = """\
shop  running  master pid 4242  policy rr  generation 3  uptime 1h02m
listeners 127.0.0.1:8000, [::1]:8000, unix:/run/shop.sock  workers 2/3 serving  target shop.app:main

id  pid gen state         uptime cpu %       rss conns restarts last exit
─────────────────────────────────────────────────────────────────────────
 7 5001   3 listening      1m05s  12.5  22.3 MiB   100        0 -
 8 5002   3 listening       4.2s   3.0 117.7 MiB    40        2 SIGKILL
 -    -   3 crash-looping   0.0s     -         -     -        9 code 1"""


def test_status_view_snapshot():
    assert render(status_view(STATUS)) == STATUS_SNAPSHOT


def test_status_colours_states_only_when_asked():
    coloured = Console(width=120, file=io.StringIO(), force_terminal=True, color_system="standard")
    coloured.print(status_view(STATUS))
    text = coloured.file.getvalue()
    assert "\x1b[32mlistening" in text  # green
    assert "\x1b[1;31mcrash-looping" in text  # bold red
    plain = Console(width=120, file=io.StringIO(), force_terminal=True, no_color=True)
    plain.print(status_view(STATUS))
    assert "\x1b[3" not in plain.file.getvalue()  # NO_COLOR: no colour (bold may remain)


def test_print_status_to_a_pipe_is_plain_and_120_wide(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "60")
    print_status(STATUS)
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert "listeners 127.0.0.1:8000, [::1]:8000, unix:/run/shop.sock  workers 2/3 serving  target shop.app:main" in out
    assert "crash-looping" in out and "SIGKILL" in out


# -- pycluster top -------------------------------------------------------------------------------------

def test_dashboard_shows_header_totals_rates_sparklines_logs_and_keys():
    history, status = fed_history(8)
    text = render(dashboard(status, history, LOGS, width=120, notice="workers: 2 -> 3"))
    lines = text.splitlines()
    assert lines[0] == "shop  running  master pid 4242  policy rr  generation 3  uptime 1h02m"
    assert lines[1] == "listeners 127.0.0.1:8000, [::1]:8000, unix:/run/shop.sock  target shop.app:main"
    assert lines[2] == ("workers 2/3 serving   conn/s 75 ▂▃▄▅▆▇█   rss 140.1 MiB   cpu 103.0%"
                        "   1 crash-looping")
    header = next(line for line in lines if line.startswith("id"))
    assert header.split() == ["id", "pid", "gen", "state", "uptime", "cpu", "%", "cpu", "1m", "rss", "conns",
                              "conn/s", "conn/s", "1m", "restarts", "last", "exit"]
    row7 = next(line for line in lines if line.startswith(" 7 5001"))
    # conn/s 70 now; rates 10..70 on the scale of the busiest worker; cpu 0..100% on a fixed scale
    assert row7.split() == ["7", "5001", "3", "listening", "1m05s", "100.0", "▂▃▄▅▆▇█", "22.3", "MiB", "380",
                            "70", "▂▃▄▅▆▇█", "0", "-"]
    row8 = next(line for line in lines if line.startswith(" 8 5002"))
    assert row8.split() == ["8", "5002", "3", "listening", "4.2s", "3.0", "▁▁▁▁▁▁▁", "117.7", "MiB", "75",
                            "5.0", "▁▁▁▁▁▁▁", "2", "SIGKILL"]
    assert any(line.split()[:4] == ["-", "-", "3", "crash-looping"] and line.endswith("9 code 1")
               for line in lines)
    tail = lines[lines.index("recent log"):]
    assert tail[1:4] == ["[pycluster] scale: 2 -> 3 workers", "[worker 8] Traceback (most recent call last):",
                         "[worker 7] GET / 200"]
    assert tail[-1] == "r reload  + add a worker  - remove a worker  q quit    workers: 2 -> 3"


def test_dashboard_fits_a_narrow_and_a_short_terminal():
    history, status = fed_history(8)
    narrow = render(dashboard(status, history, LOGS, width=80), width=80)
    assert "cpu 1m" not in narrow and "▂▃" not in narrow.split("\n", 3)[3]  # no sparkline columns
    row7 = next(line for line in narrow.splitlines() if line.startswith(" 7 5001"))
    assert row7.split()[-3:] == ["70", "0", "-"] and "…" not in row7
    short = render(dashboard(status, history, LOGS, width=120, height=13), height=13)
    assert "[worker 7] GET / 200" in short and "scale: 2 -> 3" not in short  # the newest lines stay
    assert short.splitlines()[-1].startswith("r reload")
    assert "recent log" in render(dashboard(status, history, LOGS, width=120, height=5))


def test_dashboard_before_the_second_poll_and_without_logs():
    history = History()
    history.update(STATUS, 0.0)
    text = render(dashboard(STATUS, history, []))
    assert "conn/s -" in text
    assert "(no log lines yet)" in text
    assert not any(c in text for c in "▂▃▄▅▆▇█")


def test_no_master_screen():
    text = render(no_master("/tmp/pyc/shop.sock", "reload: no master answers", since=12.0))
    assert text.splitlines()[0] == "no master answers on /tmp/pyc/shop.sock; retrying (last answer 12s ago)"
    assert text.splitlines()[-1] == "r reload  + add a worker  - remove a worker  q quit    reload: no master answers"
    assert "retrying" in render(no_master("/x.sock")) and "ago" not in render(no_master("/x.sock"))


def test_poller_draws_the_no_master_screen_when_nothing_answers(tmp_path):
    poller = Poller(str(tmp_path / "ghost.sock"))
    text = render(poller.frame(os.terminal_size((120, 40)), ""))
    assert f"no master answers on {tmp_path / 'ghost.sock'}; retrying" in text


# -- the live loop's terminal --------------------------------------------------------------------------

def test_cbreak_is_restored_on_exit_and_on_an_exception():
    leader, follower = pty.openpty()
    try:
        stream = os.fdopen(follower, "r", closefd=False)
        before = termios.tcgetattr(follower)
        with cbreak(stream) as fd:
            assert fd == follower
            lflag = termios.tcgetattr(follower)[3]
            assert not lflag & termios.ICANON and not lflag & termios.ECHO
            assert lflag & termios.ISIG  # Ctrl-C still reaches the view as KeyboardInterrupt
        assert termios.tcgetattr(follower) == before
        with pytest.raises(RuntimeError), cbreak(stream):
            raise RuntimeError("boom")
        assert termios.tcgetattr(follower) == before
        with cbreak(stream):
            os.write(leader, b"+q")
            assert read_keys(follower, 5.0) == "+q"
            assert read_keys(follower, 0.01) == ""
    finally:
        os.close(leader)
        os.close(follower)


def test_cbreak_on_a_stream_that_is_not_a_terminal():
    with cbreak(io.StringIO()) as fd:
        assert fd is None
    assert read_keys(None, 0.0) == ""


def test_read_keys_reports_the_end_of_input():
    r, w = os.pipe()
    try:
        os.close(w)
        with pytest.raises(EOFError):  # the view ends instead of spinning on a dead terminal
            read_keys(r, 5.0)
    finally:
        os.close(r)


def test_reload_bar_counts_the_replaced_workers():
    console = Console(width=100, record=True, no_color=True, file=io.StringIO(), force_terminal=True)
    with ReloadBar(console) as bar:
        bar.advance({"replaced": 1, "total": 2, "worker": 3, "pid": 123})
        assert "1/2" in render(bar.progress)
        bar.advance({"replaced": 2, "total": 2, "worker": 4, "pid": 124})
    final = render(bar.progress)
    assert "reload" in final and "━━━━" in final and "2/2" in final and "new worker 4 (pid 124) serving" in final


def test_status_view_lists_the_workers_the_master_holds_back_from():
    status = copy.deepcopy(STATUS)
    reason = "uses 22 MiB at its start, over --max-memory 1 MiB: not replaced for memory (raise --max-memory)"
    status["workers"][1]["warning"] = reason
    text = render(status_view(status))
    assert text.startswith(STATUS_SNAPSHOT)
    assert text.splitlines()[-1] == f"worker 8: {reason}"
    assert render(status_view(STATUS)) == STATUS_SNAPSHOT  # no warning, no extra lines
