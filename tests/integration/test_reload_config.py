"""A reload re-reads the config file first (SPEC section 4, issue 4).

A config that no longer parses aborts the reload before any worker is touched
(same pids, same generation, an error naming the key); ``env`` reaches the new
generation; a changed ``workers`` scales the cluster once the reload is
complete, while a count set by ``pycluster scale`` survives a reload whose
file did not change it; what only a new master can change (``bind``) is
reported in the reply and the log, and kept.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from cli_support import http_get, json_app, pyc, unused_port, wait_until  # noqa: F401  (pyc: fixture)

pytestmark = pytest.mark.timeout(60)

APP = json_app(facts='{"pid": os.getpid(), "color": os.environ.get("COLOR")}')
SLOW_APP = json_app(facts='{"pid": os.getpid(), "color": os.environ.get("COLOR")}',
                    prelude="import time\ntime.sleep(0.8)  # a slow boot: a reload of 2 takes > 1 s")


free_port = unused_port


def config(port: int, workers: int, color: str, extra: str = "") -> str:
    return (f'app = "colorapp:main"\nworkers = {workers}\nbind = ["127.0.0.1:{port}"]\n'
            f'graceful_timeout = 2\nenv = {{ COLOR = "{color}" }}\n{extra}')


def reload_and_wait(path) -> dict:
    """The final reply of a {"cmd": "reload", "wait": true} (after the progress lines)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(b'{"cmd": "reload", "wait": true}\n')
        for line in sock.makefile("rb"):
            reply = json.loads(line)
            if not (reply.get("result") or {}).get("progress"):
                return reply
    raise AssertionError("the master closed the connection before the reload's result")


def serving(status: dict) -> set[int]:
    return {w["pid"] for w in status["workers"] if w["state"] == "listening"}


def colors(port: int, n: int = 6) -> set[str]:
    return {json.loads(http_get(port)[2])["color"] for _ in range(n)}


def test_reload_applies_the_config_file_or_aborts_before_touching_a_worker(pyc):
    port = free_port()
    pyc.write("colorapp.py", APP)
    pyc.write("pycluster.toml", config(port, 2, "blue"))
    master = pyc.start()
    assert master.wait_ready() == 2
    assert colors(port) == {"blue"}
    before = serving(master.status())

    # A bad file: the reload is refused, nothing is touched.
    pyc.write("pycluster.toml", config(port, 2, "green") + "graceful_timeut = 3\n")
    bad = pyc.cli("reload", "-n", "app")
    assert bad.returncode == 1
    assert "graceful_timeut" in bad.stderr and "graceful_timeout" in bad.stderr, bad.stderr
    status = master.status()
    assert serving(status) == before and status["generation"] == 1

    # env reaches the new generation; workers 2 -> 3 once the reload is done.
    pyc.write("pycluster.toml", config(port, 3, "green"))
    ok = pyc.cli("reload", "-n", "app", timeout=30)
    assert ok.returncode == 0, ok.stderr
    status = master.wait_status(lambda s: len(serving(s)) == 3, 15, "3 workers after the reload")
    assert not serving(status) & before
    assert status["workers_wanted"] == 3
    assert colors(port) == {"green"}
    master.wait_line(r"reload: workers 2 -> 3 \(the config changed\)")


def test_manual_scale_survives_a_reload_and_bind_changes_wait_for_a_restart(pyc):
    port, other = free_port(), free_port()
    pyc.write("colorapp.py", APP)
    pyc.write("pycluster.toml", config(port, 2, "blue"))
    master = pyc.start()
    master.wait_ready()
    assert pyc.cli("scale", "-n", "app", "3").returncode == 0
    master.wait_status(lambda s: len(serving(s)) == 3, 15, "3 workers")

    pyc.write("pycluster.toml", config(other, 2, "blue"))  # workers unchanged in the file; bind changed
    reply = reload_and_wait(master.control)
    assert reply["ok"] is True, reply
    assert any("bind changed" in note for note in reply["result"]["notes"]), reply
    master.wait_line(r"reload: bind changed in the config: it takes effect when the master restarts")
    status = master.wait_status(lambda s: len(serving(s)) == 3, 15, "still 3 workers")
    assert status["generation"] == 2 and status["workers_wanted"] == 3
    assert http_get(port)[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", other), timeout=1).close()


def test_a_reload_that_switches_the_heartbeat_timeout_off_or_on_aborts_no_worker(pyc):
    """timeout 2 -> 0: the check stops judging at once; 0 -> 1: the workers started without
    heartbeats are not judged while the (slow) reload replaces them."""
    port = free_port()
    pyc.write("colorapp.py", SLOW_APP)
    pyc.write("pycluster.toml", config(port, 2, "blue", "timeout = 2\n"))
    master = pyc.start()
    master.wait_ready(20)

    def settled_without_aborts(generation: int, seconds: float) -> dict:
        status = master.wait_status(lambda s: s["generation"] == generation and len(serving(s)) == 2
                                    and all(w["generation"] == generation for w in s["workers"]),
                                    20, f"2 workers of generation {generation}")
        pids = serving(status)
        end = time.monotonic() + seconds  # a few heartbeat checks' worth of nothing happening
        while time.monotonic() < end:
            now = master.status()
            assert serving(now) == pids and all(w["restarts"] == 0 for w in now["workers"]), master.output()
            time.sleep(0.1)
        assert not master.find_line("sent no heartbeat"), master.output()
        return status

    pyc.write("pycluster.toml", config(port, 2, "green"))  # timeout back to its default, 0
    assert reload_and_wait(master.control)["ok"] is True
    settled_without_aborts(2, 1.5)
    pyc.write("pycluster.toml", config(port, 2, "red", "timeout = 1\n"))
    assert reload_and_wait(master.control)["ok"] is True
    settled_without_aborts(3, 1.5)
    assert colors(port) == {"red"}
