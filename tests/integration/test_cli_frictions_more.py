"""More frictions of ``pycluster run`` (issue 15, item 6): an app's import
traceback printed once and without pycluster's frames, an app that binds
another address than ``--bind``, the addresses an app bound in ``status``,
shell completion of option values and masters' names, defaults in ``--help``."""

from __future__ import annotations

import re
import subprocess

import pytest

from cli_support import CLI, IDLE_APP, http_get, pyc, unused_port  # noqa: F401 (pyc is a fixture)

pytestmark = pytest.mark.timeout(60)

BROKEN = """\
def helper():
    raise RuntimeError("boom at import")


helper()


def main():
    pass
"""


def _run_combined(pyc, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """``pycluster run`` with stdout and stderr on one pipe, as on a terminal."""
    proc = subprocess.Popen([*CLI, "run", *args], cwd=pyc.dir, env=pyc.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    pyc.verbs.append(proc)  # killed at the end of the test, whatever happens
    return pyc.finish(proc, timeout)


@pytest.mark.parametrize("preload", [False, True], ids=["spawn", "preload"])
def test_an_import_traceback_is_printed_once_with_the_apps_frames_only(pyc, preload):
    pyc.write("broken.py", BROKEN)
    done = _run_combined(pyc, "broken:main", "-w", "1", "-n", "brk", *(["--preload"] if preload else []))
    assert done.returncode == 3, done.stdout
    assert done.stdout.count("RuntimeError: boom at import") == 1, done.stdout
    assert done.stdout.count("Traceback (most recent call last)") == 1, done.stdout
    assert "broken.py\", line 5, in <module>" in done.stdout, done.stdout
    assert "pycluster/" not in done.stdout and "importlib" not in done.stdout, done.stdout
    assert "cannot load 'broken:main'" in done.stdout and "pycluster: pycluster:" not in done.stdout, done.stdout
    assert "could not load the app: pycluster:" not in done.stdout, done.stdout


def test_the_boot_failure_still_quotes_the_stderr_it_did_not_show(pyc):
    # stdout (the workers' lines) and stderr apart: the failure on stderr quotes the tail.
    pyc.write("broken.py", BROKEN)
    master = pyc.run_to_end("broken:main", "-w", "1")
    assert master.proc.returncode == 3, master.output()
    assert "last lines of worker 1" in "\n".join(master.stderr), master.output()
    assert any("RuntimeError: boom at import" in line for line in master.stderr), master.output()


def test_a_script_failing_at_run_shows_its_frames_only(pyc):
    pyc.write("broken.py", BROKEN)
    pyc.write("script.py", "import broken\n")
    master = pyc.start("script.py", "-w", "1")
    master.wait_line(r"\[worker 1\] RuntimeError: boom at import")
    lines = [line for line in master.stdout if line.startswith("[worker 1]")]
    assert any('script.py", line 1, in <module>' in line for line in lines), master.output()
    assert not [line for line in lines if "pycluster/" in line or "runpy" in line], master.output()


OTHER_PORT_APP = """\
import os
import socket


def main():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(os.environ["APP_PORT"])))
    sock.listen()
    while True:
        conn, _ = sock.accept()
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
        conn.close()
"""


def test_an_app_binding_another_port_than_bind_is_named_at_once_and_in_the_boot_failure(pyc, free_port):
    pyc.write("other_port.py", OTHER_PORT_APP)
    bound = free_port
    asked = unused_port()
    master = pyc.start("other_port:main", "-w", "1", "--bind", f"127.0.0.1:{asked}", "--boot-timeout", "3",
                       env={"APP_PORT": bound})
    # Said as soon as the worker binds, long before the boot timeout...
    master.wait_line(rf"\[pycluster\] worker 1 \(pid \d+\) listens on 127\.0\.0\.1:{bound}, which is not a"
                     rf" --bind address \(127\.0\.0\.1:{asked}\)", 2.5)
    assert http_get(bound)[2] == b"hi"  # allowed: the master shares it (Node's semantics)
    assert master.wait_exit(15) == 3, master.output()
    failure = "\n".join(master.stderr)
    assert f"not ready after 3s (it listens on 127.0.0.1:{bound}; the master waits for it on" \
           f" 127.0.0.1:{asked})" in failure, master.output()


def test_status_lists_the_addresses_the_app_bound(pyc, free_port):
    pyc.write("other_port.py", OTHER_PORT_APP)
    master = pyc.start("other_port:main", "-w", "2", env={"APP_PORT": free_port})
    master.wait_ready()
    master.wait_line(rf"ready: 2 workers, policy rr, http://127\.0\.0\.1:{free_port} \(bound by the app\)")
    status = master.status()
    assert status["listeners"] == [], status
    assert status["app_listeners"] == [{"address": "127.0.0.1", "port": free_port, "address_type": 4}], status
    table = pyc.cli("status", "-n", "app")
    assert table.returncode == 0, table.stderr
    assert f"listeners 127.0.0.1:{free_port} (bound by the app)" in table.stdout, table.stdout


def _complete(pyc, line: str) -> list[str]:
    """What click's bash completion offers for ``line`` (the cursor at its end)."""
    words = line.split(" ")
    done = pyc.cli(env={"_PYCLUSTER_COMPLETE": "bash_complete", "COMP_WORDS": line,
                        "COMP_CWORD": str(len(words) - 1)})
    assert done.returncode == 0, done.stderr
    return [row.split(",", 1)[1] for row in done.stdout.splitlines() if row.startswith("plain,")]


def test_completion_offers_running_masters_and_option_values(pyc):
    pyc.write("idle_app.py", IDLE_APP)
    for name in ("web", "worker-q"):
        pyc.start("idle_app:main", "-w", "1", name=name).wait_ready()
    (pyc.runtime_dir / "gone.sock").touch()  # a dead master's leftover: not offered
    assert _complete(pyc, "pycluster status -n ") == ["web", "worker-q"]
    assert _complete(pyc, "pycluster logs -n w") == ["web", "worker-q"]
    assert _complete(pyc, "pycluster stop --name wo") == ["worker-q"]
    assert _complete(pyc, "pycluster run --policy ") == ["rr", "none", "reuseport"]
    assert _complete(pyc, "pycluster run --policy r") == ["rr", "reuseport"]
    assert _complete(pyc, "pycluster run --interface ") == ["auto", "asgi", "wsgi", "call"]
    assert _complete(pyc, "pycluster run --log-format ") == ["text", "json"]
    assert _complete(pyc, "pycluster run -w ") == ["auto"]


def test_run_help_shows_the_defaults(pyc):
    shown = pyc.cli("run", "--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # click wraps the help column
    for option, default in [("--policy", "rr"), ("--boot-timeout", "30"), ("--graceful-timeout", "30"),
                            ("--workers", "auto"), ("--log-format", "text"), ("--threads", "4"),
                            ("--restart-delay", "0.1"), ("--interface", "auto")]:
        # the option's own help, up to its default (no other option's default between)
        assert re.search(rf" {re.escape(option)} (?:(?!\[default:).)*\[default: {re.escape(default)}\]", text), \
            (option, text)
    assert "[default: unset]" not in text and "(30)" not in text, text
