"""The terminal UI in a real terminal: tmux (send-keys, capture-pane), SPEC section 6.

``pycluster top`` shows the master and its workers in colour, puts the
terminal in cbreak mode while it runs; ``+`` / ``-`` scale the master and
``r`` reloads it (the master's status and the screen both show it); it keeps
drawing through a resize (sparklines give way on a narrow terminal); it shows
the no-master line when the master stops and recovers when a new master takes
the same name; ``q`` and Ctrl-C both end it with the terminal's modes restored.
``reload --wait`` shows a progress bar on a terminal and plain lines on a pipe.
"""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cli_support import CLI, pyc  # noqa: F401  (pyc is a fixture)

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

HELLO = "pycluster.examples.hello:main"
LOOK_S = 0.1  # between two captures of the pane
WAIT_S = 30  # the longest any one change may take to reach the screen (2 busy cores)


class Tmux:
    """One private tmux server (its own socket) with one detached session, S."""

    def __init__(self, env: dict):
        self.dir = Path(tempfile.mkdtemp(prefix="pyc-tmux-", dir="/tmp"))  # short: a unix socket path
        self.env = env
        self.base = ["tmux", "-S", str(self.dir / "sock")]

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, f"tmux {args}: {done.stderr}"
        return done.stdout

    def start(self, script: str, width: int = 120, height: int = 40) -> None:
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "S", "bash", "--norc", "-c", script)

    def screen(self, colours: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", "S")

    def keys(self, text: str) -> None:
        self.tmux("send-keys", "-t", "S", "-l", text)

    def show(self, what: str, predicate, timeout: float = WAIT_S) -> str:
        """Capture the pane until ``predicate(screen)`` holds; the screen then."""
        end = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > end:
                pytest.fail(f"timed out after {timeout}s waiting for the pane to show {what}; it shows:\n{screen}")
            time.sleep(LOOK_S)

    def shows(self, *texts: str, timeout: float = WAIT_S) -> str:
        return self.show(" and ".join(map(repr, texts)), lambda s: all(t in s for t in texts), timeout)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], env=self.env, capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tmux(pyc):
    env = pyc.env()
    env.pop("NO_COLOR")  # a terminal gets colour unless NO_COLOR says otherwise
    term = Tmux(env)
    try:
        yield term
    finally:
        term.close()


def command(*args: str, env: dict) -> str:
    """A shell command line running pycluster with the test's runtime dir and sources."""
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("PYCLUSTER_RUNTIME_DIR", "PYTHONPATH"))
    return f"env {exports} " + " ".join(map(shlex.quote, [*CLI, *args]))


def port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cooked(stty: str) -> bool:
    """``stty -a`` shows canonical input and echo switched on."""
    return bool(re.search(r"(?<![-\w])icanon\b", stty) and re.search(r"(?<![-\w])echo\b", stty))


def wait_file(path: Path, what: str, tmux: Tmux) -> str:
    tmux.show(what, lambda _: path.exists() and path.stat().st_size > 0)
    return path.read_text()


def test_top_keys_resize_master_restart_and_terminal_restore(pyc, tmux):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{port()}", name="tuitop")
    master.wait_ready()
    first = master.status()
    quit_stty, intr_stty = tmux.dir / "after-q", tmux.dir / "after-ctrl-c"
    top = command("top", "-n", "tuitop", env=tmux.env)
    # `trap : INT` keeps bash going after Ctrl-C (the view itself gets the default SIGINT).
    tmux.start(f"trap : INT; {top}; stty -a > {quit_stty}; {top}; stty -a > {intr_stty}; exec sleep 600")

    screen = tmux.shows(f"master pid {master.pid}", "workers 2/2 serving", "recent log", "q quit",
                        *(str(w["pid"]) for w in first["workers"]))
    assert screen.count("listening") == 2, screen
    assert "\x1b[32mlistening" in tmux.screen(colours=True)  # green on a terminal
    tty = tmux.tmux("display-message", "-p", "-t", "S", "#{pane_tty}").strip()
    stty = subprocess.run(["stty", "-a", "-F", tty], capture_output=True, text=True, timeout=10).stdout
    assert "-icanon" in stty and "-echo " in stty, f"the view runs in cbreak mode:\n{stty}"

    tmux.keys("+")
    master.wait_status(lambda st: st["workers_wanted"] == 3 and
                       sum(w["state"] == "listening" for w in st["workers"]) == 3, WAIT_S, "3 workers listening")
    screen = tmux.shows("workers 3/3 serving", "workers: 2 -> 3")
    assert screen.count("listening") == 3, screen

    tmux.keys("-")
    master.wait_status(lambda st: st["workers_wanted"] == 2 and len(st["workers"]) == 2, WAIT_S, "back to 2 workers")
    tmux.shows("workers 2/2 serving", "workers: 3 -> 2")

    tmux.keys("r")
    reloaded = master.wait_status(lambda st: st["generation"] == 2 and st["state"] == "running"
                                  and all(w["generation"] == 2 for w in st["workers"]), WAIT_S, "generation 2")
    tmux.shows("generation 2", "reload to generation 2 started", *(str(w["pid"]) for w in reloaded["workers"]))

    # A resize: rich reads the new size at the next frame; narrow, the sparkline columns give way.
    tmux.tmux("resize-window", "-t", "S", "-x", "90", "-y", "30")
    screen = tmux.show("the dashboard redrawn 90 columns wide",
                       lambda s: "workers 2/2 serving" in s and "conn/s" in s and "cpu 1m" not in s)
    assert max(map(len, screen.splitlines())) <= 90, screen
    tmux.tmux("resize-window", "-t", "S", "-x", "120", "-y", "40")
    tmux.shows("cpu 1m", "conn/s 1m", "workers 2/2 serving")

    sock = str(master.control)
    stop = pyc.cli("stop", "-n", "tuitop", timeout=30)
    assert stop.returncode == 0, stop.stderr
    tmux.shows(f"no master answers on {sock}; retrying")

    again = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{port()}", name="tuitop")
    again.wait_ready()
    tmux.shows(f"master pid {again.pid}", "workers 2/2 serving",
               *(str(w["pid"]) for w in again.status()["workers"]))

    tmux.keys("q")
    after_q = wait_file(quit_stty, "stty after q", tmux)
    assert cooked(after_q), f"the terminal is not restored after q:\n{after_q}"

    tmux.shows(f"master pid {again.pid}")  # the second view, for Ctrl-C
    tmux.tmux("send-keys", "-t", "S", "C-c")
    after_intr = wait_file(intr_stty, "stty after Ctrl-C", tmux)
    assert cooked(after_intr), f"the terminal is not restored after Ctrl-C:\n{after_intr}"
    tmux.show("the views gone (only sleep left)",
              lambda _: tmux.tmux("display-message", "-p", "-t", "S", "#{pane_current_command}").strip() == "sleep")


def test_reload_wait_draws_a_progress_bar_on_a_terminal_and_lines_on_a_pipe(pyc, tmux):
    master = pyc.start(HELLO, "-w", "2", "-b", f"127.0.0.1:{port()}", name="tuireload")
    master.wait_ready()

    reload = command("reload", "-n", "tuireload", "--wait", env=tmux.env)
    tmux.start(f'{reload}; echo "[exit $?]"; exec sleep 600')
    screen = tmux.shows("[exit 0]", "reloaded: generation 2, 2 workers")
    bar = next((line for line in screen.splitlines() if line.startswith("reload ")), "")
    assert "━━━━" in bar and "2/2" in bar and "serving" in bar, screen
    assert "replaced 1/2" not in screen, screen

    piped = pyc.cli("reload", "-n", "tuireload", "--wait", timeout=30)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["replaced 1/2", "replaced 2/2"], piped.stdout
    assert lines[2].startswith("reloaded: generation 3, 2 workers"), piped.stdout
    assert "━" not in piped.stdout and "\x1b[" not in piped.stdout
