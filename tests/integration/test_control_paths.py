"""Paths the master writes as root in directories it does not own (issue 12, items 10, 11, 22).

- ``--pidfile``: a symlink (or another user's file) planted at the pidfile's name is refused,
  never followed or truncated; the pidfile is removed at exit only while it is still ours.
- The control socket's directory: created 0700 when missing, never chmodded when it exists
  (``--control /tmp/app.sock`` must leave ``/tmp`` alone); a socket planted there by another
  user is named, with its owner, by ``run`` and refused by the client before it sends anything.
- Taking over a stale control socket is atomic: of many concurrent claims exactly one wins.

Other users are ``nobody`` through ``setpriv``, as in test_privileges.py.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cli_support import IDLE_APP, pyc  # noqa: F401  (pyc: fixture)
from pycluster.control.claim import ControlSocketInUse, claim
from pycluster.master.ops.pidfile import PidFile, PidFileError

pytestmark = pytest.mark.timeout(60)

SETPRIV = shutil.which("setpriv")
try:
    NOBODY = pwd.getpwnam("nobody")
except KeyError:
    NOBODY = None

needs_nobody = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None or NOBODY is None,
                                  reason="needs root, setpriv and a 'nobody' user")


def nobody_argv(argv: list[str]) -> list[str]:
    return [SETPRIV, f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", *argv]


@pytest.fixture
def shared_dir():
    """A directory under /tmp that nobody can reach (0755 parent); removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="pyc-paths-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def nobody_python() -> str:
    """An interpreter nobody can run (the planted servers need only the standard library)."""
    for python in ("/usr/bin/python3", sys.executable, "/usr/local/bin/python3"):
        if os.path.exists(python) and subprocess.run(nobody_argv([python, "-c", "import socket"]),
                                                     cwd="/", capture_output=True, timeout=30).returncode == 0:
            return python
    pytest.skip("no Python interpreter that nobody can run")


# -- item 10: --pidfile ----------------------------------------------------------------------------

def test_pidfile_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    link = tmp_path / "app.pid"
    link.symlink_to(victim)
    with pytest.raises(PidFileError) as err:
        PidFile(str(link)).acquire()
    assert str(link) in str(err.value) and "symbolic link" in str(err.value), err.value
    assert victim.read_text() == "precious\n", "the pidfile's symlink was followed"
    assert link.is_symlink()


def test_pidfile_is_removed_only_while_it_is_still_ours(tmp_path):
    path = tmp_path / "app.pid"
    pidfile = PidFile(str(path))
    pidfile.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Something else now lives at that name (an admin moved ours away, another master wrote its own).
    os.rename(path, tmp_path / "moved.pid")
    path.write_text("99999\n")
    pidfile.release()
    assert path.read_text() == "99999\n", "release() removed a pidfile that was no longer ours"
    # A stale pidfile of ours is reused (same inode, rewritten).
    ino = path.stat().st_ino
    again = PidFile(str(path))
    again.acquire()
    assert path.stat().st_ino == ino and path.read_text() == f"{os.getpid()}\n"
    again.release()
    assert not path.exists()


@needs_nobody
def test_run_refuses_a_pidfile_planted_by_the_service_user(pyc, shared_dir):
    """Root's --pidfile in the service user's directory: a symlink to a file in /etc (here a
    root-owned file elsewhere) or a file of that user's are refused (exit 1), never written."""
    victim = shared_dir / "victim.conf"
    victim.write_text("root's file\n")
    service = shared_dir / "srv"
    service.mkdir()
    os.chown(service, NOBODY.pw_uid, NOBODY.pw_gid)
    pidfile = service / "app.pid"
    planted = subprocess.run(nobody_argv(["ln", "-s", str(victim), str(pidfile)]), cwd="/",
                             capture_output=True, text=True, timeout=10)
    assert planted.returncode == 0, planted.stderr
    pyc.write("idle_app.py", IDLE_APP)
    done = pyc.cli("run", "idle_app:main", "-w", "1", "-n", "app", "--pidfile", pidfile, timeout=20)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert str(pidfile) in done.stderr and "symbolic link" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert victim.read_text() == "root's file\n", "root followed the planted symlink"

    os.unlink(pidfile)
    planted = subprocess.run(nobody_argv(["sh", "-c", f"echo 1 > {pidfile}"]), cwd="/",
                             capture_output=True, text=True, timeout=10)
    assert planted.returncode == 0, planted.stderr
    done = pyc.cli("run", "idle_app:main", "-w", "1", "-n", "app", "--pidfile", pidfile, timeout=20)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert str(pidfile) in done.stderr and str(NOBODY.pw_uid) in done.stderr, done.stderr
    assert pidfile.read_text() == "1\n"


# -- item 11: the control socket's directory and other users' sockets ---------------------------------

def test_claim_never_chmods_an_existing_shared_directory(shared_dir):
    shared = shared_dir / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    sock = claim(str(shared / "app.sock"))
    try:
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777, "claim() chmodded a directory it did not create"
        assert stat.S_IMODE(os.lstat(shared / "app.sock").st_mode) == 0o600
    finally:
        sock.close()
    fresh = shared_dir / "fresh" / "run"
    sock = claim(str(fresh / "app.sock"))
    try:
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    finally:
        sock.close()


# A fake master planted by nobody: answers every line with a plausible status, records the request.
FAKE_MASTER = """
import json, os, socket, sys
path, log = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.umask(0)
srv.bind(path)
srv.listen(8)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    line = conn.makefile("rb").readline()
    with open(log, "ab") as fh:
        fh.write(line)
    conn.sendall(json.dumps({"ok": True, "result": {"name": "fake", "pid": 1, "state": "running",
                 "workers": [], "listeners": [], "policy": "rr", "generation": 1, "workers_wanted": 0,
                 "uptime_s": 1, "target": "x:y", "version": "0"}}).encode() + b"\\n")
    conn.close()
"""


@pytest.fixture
def planted_socket(shared_dir, nobody_python):
    """A listening socket owned by nobody in a world-writable (1777) directory."""
    shared = shared_dir / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    log = shared / "requests.log"
    log.touch()
    os.chmod(log, 0o666)
    path = shared / "app.sock"
    proc = subprocess.Popen(nobody_argv([nobody_python, "-c", FAKE_MASTER, str(path), str(log)]), cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "listening", proc.stderr.read()
        assert os.lstat(path).st_uid == NOBODY.pw_uid
        yield path, log
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@needs_nobody
def test_client_refuses_a_socket_owned_by_another_user(pyc, planted_socket):
    path, log = planted_socket
    for verb in (["status", "--json"], ["stop"]):
        done = pyc.cli(*verb, "--control", path, timeout=20)
        assert done.returncode == 1, (verb, done.returncode, done.stdout, done.stderr)
        assert str(path) in done.stderr and ("nobody" in done.stderr or str(NOBODY.pw_uid) in done.stderr), \
            done.stderr
        assert "Traceback" not in done.stderr
    assert log.read_bytes() == b"", "the client sent a request to another user's socket"


@needs_nobody
def test_run_names_a_socket_planted_by_another_user(pyc, planted_socket):
    path, _log = planted_socket
    pyc.write("idle_app.py", IDLE_APP)
    started = time.monotonic()
    done = pyc.cli("run", "idle_app:main", "-w", "1", "--control", path, timeout=20)
    took = time.monotonic() - started
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert str(path) in done.stderr and ("nobody" in done.stderr or str(NOBODY.pw_uid) in done.stderr), \
        done.stderr
    assert "Traceback" not in done.stderr
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o1777
    assert took < 5, f"run took {took:.1f}s to refuse"


# -- item 22: atomic take-over of a stale socket -----------------------------------------------------

def _stale_socket(path: str) -> None:
    """A socket file nobody listens on (a master that was SIGKILLed)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


def _answer_status(sock: socket.socket, stop: threading.Event) -> None:
    """What a live master does for the other claimers' probes: answer status."""
    sock.setblocking(True)
    sock.settimeout(0.05)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except (TimeoutError, OSError):
            continue
        with conn:
            conn.settimeout(1)
            try:
                conn.makefile("rb").readline()
                conn.sendall(json.dumps({"ok": True, "result": {"pid": os.getpid()}}).encode() + b"\n")
            except OSError:
                pass


@pytest.mark.timeout(60)
def test_concurrent_claims_of_a_stale_socket_have_exactly_one_winner():
    trials, claimers = 60, 4
    base = Path(tempfile.mkdtemp(prefix="pyc-claim-", dir="/tmp"))  # short socket paths
    bad = []
    try:
        for trial in range(trials):
            path = str(base / f"t{trial}" / "app.sock")
            os.makedirs(os.path.dirname(path), mode=0o700)
            _stale_socket(path)
            barrier = threading.Barrier(claimers)
            stop = threading.Event()
            results: list = [None] * claimers
            servers: list[threading.Thread] = []

            def attempt(i: int) -> None:
                barrier.wait()
                try:
                    sock = claim(path)
                except ControlSocketInUse as exc:
                    results[i] = exc
                    return
                except OSError as exc:
                    results[i] = exc
                    return
                results[i] = sock
                server = threading.Thread(target=_answer_status, args=(sock, stop), daemon=True)
                servers.append(server)
                server.start()

            threads = [threading.Thread(target=attempt, args=(i,)) for i in range(claimers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            stop.set()
            for server in servers:
                server.join(5)
            winners = [r for r in results if isinstance(r, socket.socket)]
            others = [r for r in results if not isinstance(r, (socket.socket, ControlSocketInUse))]
            if len(winners) != 1 or others:
                bad.append(f"trial {trial}: {len(winners)} winners, other outcomes {others!r}")
            elif not _is_listening(path):
                bad.append(f"trial {trial}: nobody listens at {path} after the claims")
            for r in winners:
                r.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert not bad, f"{len(bad)} of {trials} trials went wrong:\n" + "\n".join(bad[:10])


def _is_listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
