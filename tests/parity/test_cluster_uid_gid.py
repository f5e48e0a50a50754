"""uid / gid of workers (NODE_PARITY section S: Node has no cluster test for
it, it only forwards uid/gid to child_process.fork; RELIABILITY 2.13).

Python translation:
* As root: ``setup_primary(uid=<nobody>, gid=<nobody's group>)`` (by number,
  and by name) and fork. The worker reports ``os.getuid()``/``getgid()``
  (real and effective) and ``os.getgroups()``: it runs as nobody, and keeps
  none of root's supplementary groups (its groups are nobody's group list).
* As a non-root primary (started under ``setpriv --reuid=65534
  --regid=65534 --clear-groups``): ``setup_primary(uid=0)`` then ``fork()``
  raises PermissionError synchronously, with a message that names the
  worker and the uid; no worker is registered and the primary carries on
  (run() returns 0).

* A non-root primary may still name its own uid/gid (no privilege needed;
  Node/libuv ignore the failing setgroups there): the fork succeeds.

The scripts live in a world-readable temporary directory so that nobody can
read them (pytest's tmp_path is private to root), and workers that switch to
nobody need an interpreter nobody may execute: sys.executable, else a
system python3 that can import pycluster (a pyenv under /root is private);
those tests are skipped when there is none.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

try:
    NOBODY = pwd.getpwnam("nobody")
except KeyError:  # pragma: no cover - every Linux has it
    NOBODY = None


@pytest.fixture
def public_dir():
    path = tempfile.mkdtemp(prefix="pycluster-uid-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


WORKER_AS_NOBODY = """
import os
import sys
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.setup_primary(uid=CREDENTIALS[0], gid=CREDENTIALS[1])
    worker = cluster.fork()

    def on_message(message):
        report(ids=message)
        worker.disconnect()

    worker.on("message", must_call(on_message, 1))
    worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    report(primary_rc=cluster.run())
else:
    cluster.worker.send({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                         "egid": os.getegid(), "groups": sorted(os.getgroups())})
"""

RUN_PUBLIC = """
import os
import subprocess
import sys
from harness import deadline

deadline(25)
cmd = [*PREFIX, os.environ["INTERPRETER"], os.path.join(os.environ["PUBLIC_DIR"], "app.py")]
sys.exit(subprocess.run(cmd, cwd=os.environ["PUBLIC_DIR"], timeout=20).returncode)
"""


def _others_can_execute(path: str) -> bool:
    """Whether a user without privileges can run ``path`` (we run as root,
    so os.access() cannot tell)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i]) or os.sep).st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IXOTH)


def interpreter_for_nobody() -> str | None:
    """sys.executable, or a system python3 that can import pycluster, that
    the user nobody may execute (pyenv under /root is not)."""
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    for candidate in candidates:
        if not os.path.exists(candidate) or not _others_can_execute(candidate):
            continue
        probe = subprocess.run([candidate, "-c", "import pycluster"], env={**os.environ, "PYTHONPATH": src},
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    return None


def write_public(public_dir: str, name: str, code: str) -> None:
    path = os.path.join(public_dir, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(code))
    os.chmod(path, 0o644)


@pytest.mark.skipif(NOBODY is None, reason="no user 'nobody'")
@pytest.mark.parametrize("by", ["number", "name"])
def test_worker_runs_as_nobody_without_root_groups(run_script, public_dir, by):
    interpreter = interpreter_for_nobody()
    if interpreter is None:
        pytest.skip("no Python interpreter that the user nobody may execute")
    if by == "number":
        uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    else:
        uid, gid = "nobody", grp.getgrgid(NOBODY.pw_gid).gr_name
    write_public(public_dir, "app.py", f"CREDENTIALS = {(uid, gid)!r}\n" + textwrap.dedent(WORKER_AS_NOBODY))
    res = run_script("PREFIX = []\n" + RUN_PUBLIC, env={"PUBLIC_DIR": public_dir, "INTERPRETER": interpreter},
                     timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    ids = res.report("ids")
    assert ids["uid"] == ids["euid"] == NOBODY.pw_uid
    assert ids["gid"] == ids["egid"] == NOBODY.pw_gid
    assert 0 not in ids["groups"], f"root's supplementary groups leaked: {ids['groups']}"
    assert set(ids["groups"]) <= set(os.getgrouplist("nobody", NOBODY.pw_gid))
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0


NON_ROOT_PRIMARY = """
import os
import re
import pycluster as cluster
from harness import deadline, report

deadline(20)
report(primary_ids=[os.getuid(), os.geteuid(), os.getgroups()])
cluster.setup_primary(uid=0)
try:
    cluster.fork()
except PermissionError as exc:
    report(error={"type": type(exc).__name__, "message": str(exc), "errno": exc.errno})
except BaseException as exc:
    report(error={"type": type(exc).__name__, "message": str(exc), "errno": getattr(exc, "errno", None)})
else:
    report(error=None)
report(workers=len(cluster.workers))
report(primary_rc=cluster.run())
"""

SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed")
def test_non_root_primary_cannot_fork_as_root(run_script, public_dir):
    write_public(public_dir, "app.py", NON_ROOT_PRIMARY)
    # setpriv keeps its capabilities until exec, so any interpreter works here.
    res = run_script(f"PREFIX = {SETPRIV!r}\n" + RUN_PUBLIC,
                     env={"PUBLIC_DIR": public_dir, "INTERPRETER": sys.executable}, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.report("primary_ids") == [65534, 65534, []]
    error = res.report("error")
    assert error is not None, "fork() as uid 0 from a non-root primary did not fail"
    assert error["type"] == "PermissionError", error
    assert error["errno"] == errno.EPERM, error
    message = error["message"]
    assert "worker" in message.lower() and "uid" in message.lower() and "0" in message, message
    assert res.report("workers") == 0
    assert res.report("primary_rc") == 0


NON_ROOT_SAME_USER = """
import os
import pycluster as cluster
from harness import deadline, must_call, report

if cluster.is_primary:
    deadline(20)
    cluster.setup_primary(uid=os.getuid(), gid=os.getgid())
    try:
        worker = cluster.fork()
    except BaseException as exc:
        report(error=f"{type(exc).__name__}: {exc}")
    else:
        def on_message(message):
            report(ids=message)
            worker.disconnect()

        worker.on("message", must_call(on_message, 1))
        worker.on("exit", must_call(lambda code, signal: report(exit=[code, signal]), 1))
    report(primary_rc=cluster.run())
else:
    cluster.worker.send({"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups())})
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed")
def test_non_root_primary_may_fork_as_itself(run_script, public_dir):
    """uid/gid equal to the primary's own need no privilege (Node/libuv
    ignore a failing setgroups there): the fork succeeds."""
    interpreter = interpreter_for_nobody()
    if interpreter is None:
        pytest.skip("no Python interpreter that the user nobody may execute")
    write_public(public_dir, "app.py", NON_ROOT_SAME_USER)
    res = run_script(f"PREFIX = {SETPRIV!r}\n" + RUN_PUBLIC,
                     env={"PUBLIC_DIR": public_dir, "INTERPRETER": interpreter}, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.all("error") == []
    assert res.report("ids") == {"uid": 65534, "gid": 65534, "groups": []}
    assert res.report("exit") == [0, None]
    assert res.report("primary_rc") == 0
