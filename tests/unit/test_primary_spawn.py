"""Unit tests of primary/spawn.py: credentials decisions (root and not,
simulated), exec_refused's hint, stdio and argv, and ForkPlan with a fake
launcher. No process is started."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from pycluster.errors import ClusterError, SettingsError
from pycluster.ipc.messages import ENV_CHANNEL_FD, ENV_PPID, ENV_STDIO, ENV_WORKER_ID
from pycluster.primary import engine
from pycluster.primary.spawn import ForkPlan, credentials, exec_refused, stdio, worker_argv

NO_SUCH_ID = 54321  # not in the user or group database of a test machine


def _no_such_id() -> None:
    try:
        pwd.getpwuid(NO_SUCH_ID)
    except KeyError:
        return
    pytest.skip(f"uid {NO_SUCH_ID} exists here")


@pytest.fixture
def as_user(monkeypatch):
    """Run credentials() as an unprivileged uid/gid 1000."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "getegid", lambda: 0)


def test_the_engine_module_exports_its_public_names():
    assert engine.credentials is credentials
    from pycluster.primary.engine import Engine, PrimaryWorker  # noqa: F401
    from pycluster.primary.engine import exec_refused as refused
    assert refused is exec_refused
    assert callable(Engine.shutdown_loop) and callable(Engine.handler_failed)


def test_nothing_asked_nothing_passed():
    assert credentials(None, None) == {}


def test_unknown_names_are_settings_errors():
    with pytest.raises(SettingsError, match="unknown user 'no-such-user-pycluster'"):
        credentials("no-such-user-pycluster", None)
    with pytest.raises(SettingsError, match="unknown group 'no-such-group-pycluster'"):
        credentials(None, "no-such-group-pycluster")


def test_unprivileged_asking_for_itself_passes_nothing(as_user):
    assert credentials(1000, 1000) == {}
    assert credentials(1000, None) == {}


def test_unprivileged_asking_for_another_is_left_to_popen(as_user):
    # Popen will fail with EPERM; fork() reports it with exec_refused.
    assert credentials(0, 0) == {"user": 0, "group": 0}
    assert credentials("root", None) == {"user": 0, "group": 0}


def test_root_switching_to_a_named_user_takes_its_groups(as_root):
    root = pwd.getpwnam("root")
    got = credentials("root", None)
    assert got["user"] == root.pw_uid and got["group"] == root.pw_gid
    assert got["extra_groups"] == os.getgrouplist("root", root.pw_gid)


def test_root_switching_to_a_bare_uid_needs_a_group(as_root):
    _no_such_id()
    with pytest.raises(SettingsError, match=f"user {NO_SUCH_ID} is not in the user database"):
        credentials(NO_SUCH_ID, None)
    assert credentials(NO_SUCH_ID, NO_SUCH_ID) == {"user": NO_SUCH_ID, "group": NO_SUCH_ID,
                                                   "extra_groups": [NO_SUCH_ID]}


def test_root_with_only_a_group_keeps_no_supplementary_group_of_its_own(as_root):
    assert credentials(None, NO_SUCH_ID) == {"group": NO_SUCH_ID, "extra_groups": [NO_SUCH_ID]}


def test_exec_refused_hints(monkeypatch):
    exc = PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    err = exec_refused(exc, "worker 3", "/usr/bin/python3", "www", None, switching=True)
    assert str(err).startswith("[Errno 13] cannot start worker 3 as user www: Permission denied")
    assert "only root may switch users" in str(err)
    err = exec_refused(exc, "worker 3", "/usr/bin/python3", None, None, switching=False)
    assert "this user cannot execute /usr/bin/python3" in str(err)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    err = exec_refused(exc, "the fork server", "/opt/py", 1001, 1002, switching=True)
    assert "as user 1001 (group 1002)" in str(err) and "cannot execute /opt/py" in str(err)


# -- stdio and argv --------------------------------------------------------------------

def test_stdio_defaults():
    assert stdio({}) == (None, None, None, [])
    assert stdio({"silent": True}) == (subprocess.PIPE,) * 3 + ([],)
    assert stdio({"stdio": ["ignore", 2]})[:3] == (subprocess.DEVNULL, 2, None)


def test_stdio_extra_entries():
    stdin, stdout, stderr, extra = stdio({"stdio": ["inherit", "inherit", "inherit", "pipe", None, 1]})
    try:
        assert [target for target, _theirs, _mine in extra] == [3, 4, 5]
        (_, pipe_theirs, pipe_mine), (_, none_theirs, none_mine), (_, fd_theirs, fd_mine) = extra
        assert pipe_theirs is not None and pipe_mine is not None
        assert none_theirs is None and none_mine is None
        assert fd_theirs is not None and fd_theirs != 1 and fd_mine is None
    finally:
        for _target, theirs, mine in extra:
            if theirs is not None:
                os.close(theirs)
            if mine is not None:
                mine.close()


def test_worker_argv():
    settings = {"exec": "/srv/app.py", "args": ["-v"], "exec_argv": ["-X", "dev"]}
    assert worker_argv(settings, None) == [sys.executable, "-X", "dev", "/srv/app.py", "-v"]
    assert worker_argv(settings, ["-m", "pycluster.child.entry", "app:main"]) == \
        [sys.executable, "-X", "dev", "-m", "pycluster.child.entry", "app:main"]
    with pytest.raises(ClusterError, match="no main script to re-run"):
        worker_argv({"exec": None}, None)


# -- ForkPlan ------------------------------------------------------------------------------

class FakeProcess:
    pid = 12345
    returncode = None
    stdin = stdout = stderr = None


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_fork_plan_hands_the_launcher_the_channel_and_env():
    calls = []

    def launcher(args, **kwargs):
        calls.append((args, kwargs))
        return FakeProcess()

    plan = ForkPlan({"exec": "/srv/app.py", "stdio": ["inherit", "inherit", "inherit", "pipe"]}, 4,
                    {"MODE": 1}, None)
    child_fd = plan.child_end.fileno()
    try:
        assert isinstance(plan.launch(launcher), FakeProcess)
        (args, kwargs), = calls
        env = kwargs["env"]
        assert args[-1] == "/srv/app.py"
        assert env["MODE"] == "1" and env[ENV_WORKER_ID] == "4" and env[ENV_PPID] == str(os.getpid())
        assert env[ENV_CHANNEL_FD] == str(child_fd) and kwargs["pass_fds"][0] == child_fd
        assert env[ENV_STDIO] == f"3:{kwargs['pass_fds'][1]}"
        assert kwargs["close_fds"] is True and kwargs["cwd"] is None and kwargs["user"] is None
        assert plan.child_end.fileno() == -1  # ours is closed once launched: the worker has its own
        assert not _open(kwargs["pass_fds"][1])
        assert len(plan.our_stdio()) == 1 and plan.our_stdio()[0] is not None
    finally:
        plan.abandon()
        for mine in plan.our_stdio():
            if mine is not None:
                mine.close()


def test_fork_plan_permission_error_is_explained_and_closes_the_channel():
    def launcher(args, **kwargs):
        raise PermissionError(13, "Permission denied", args[0])

    plan = ForkPlan({"exec": "/srv/app.py"}, 2, None, None)
    with pytest.raises(PermissionError, match="cannot start worker 2 as this user"):
        plan.launch(launcher)
    assert plan.parent_end.fileno() == -1 and plan.child_end.fileno() == -1


def test_fork_plan_with_a_bad_inspect_port_leaks_nothing():
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(SettingsError):
        ForkPlan({"exec": "/srv/app.py", "inspect_port": lambda: -1}, 1, None, None)
    assert set(os.listdir("/proc/self/fd")) <= before  # the IPC socketpair is closed
