"""Starting a worker process: its argv, stdio, environment and credentials.

:class:`ForkPlan` prepares everything a worker needs (the IPC socketpair, the
env, the extra stdio descriptors, the Popen keyword arguments) and hands it to
a :class:`Launcher`: ``subprocess.Popen`` itself, or the --preload fork
server's ``ForkServer.launch`` (which returns an awaitable instead of a
process; ``Engine.fork_async`` awaits it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import IO, Any, Protocol, TypeVar

from ..errors import ClusterError, SettingsError
from ..ipc.channel import socketpair
from ..ipc.messages import ENV_CHANNEL_FD, ENV_INSPECT_PORT, ENV_PPID, ENV_STDIO, ENV_WORKER_ID
from .settings import inspect_port

P_co = TypeVar("P_co", covariant=True)


class Launcher(Protocol[P_co]):
    """Starts a worker process from Popen's arguments (``subprocess.Popen``
    returns the process; the fork server's ``launch`` an awaitable for it).
    Only these keyword arguments are ever passed; cwd and the credentials are
    None when not set (Popen's own defaults)."""

    def __call__(self, args: list[str], /, *, env: dict[str, str], pass_fds: list[int], close_fds: bool,
                 stdin: int | None, stdout: int | None, stderr: int | None, cwd: str | None,
                 user: int | None, group: int | None, extra_groups: list[int] | None) -> P_co: ...


class Process(Protocol):
    """What the engine keeps of a started worker: the parts of ``Popen`` it uses."""

    pid: int
    returncode: int | None

    @property
    def stdin(self) -> IO[bytes] | None: ...

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def stderr(self) -> IO[bytes] | None: ...


# (target fd in the worker, the descriptor we pass, our end of a 'pipe' entry)
StdioExtra = tuple[int, "int | None", "socket.socket | None"]

_STD = {"pipe": subprocess.PIPE, "inherit": None, "ignore": subprocess.DEVNULL, None: None}


def stdio(settings: Mapping[str, Any]) -> tuple[int | None, int | None, int | None, list[StdioExtra]]:
    """Popen's stdin/stdout/stderr for the ``stdio``/``silent`` settings, and
    the entries past the third (socketpairs for 'pipe', dups for an fd)."""
    spec = settings.get("stdio")
    if spec is None:
        spec = ["pipe", "pipe", "pipe"] if settings.get("silent", False) else ["inherit", "inherit", "inherit"]
    spec = list(spec) + ["inherit"] * (3 - len(spec))

    def std(entry: Any) -> int | None:
        if isinstance(entry, int):
            return entry
        return _STD.get(entry)

    stdin, stdout, stderr = (std(e) for e in spec[:3])
    extra: list[StdioExtra] = []
    for index, entry in enumerate(spec[3:], start=3):
        if entry == "pipe":
            mine, theirs = socket.socketpair()
            extra.append((index, os.dup(theirs.fileno()), mine))
            theirs.close()
        elif isinstance(entry, int):
            extra.append((index, os.dup(entry), None))
        else:
            extra.append((index, None, None))
    return stdin, stdout, stderr, extra


def worker_argv(settings: Mapping[str, Any], worker_command: list[str] | None) -> list[str]:
    """The worker's command line: ``worker_command`` (the CLI master's
    ``-m pycluster.child.entry APP``), else this program re-run (Node)."""
    if worker_command is not None:
        return [sys.executable, *settings.get("exec_argv", []), *worker_command]
    exec_path = settings.get("exec")
    if not exec_path:
        raise ClusterError("cannot start a worker: there is no main script to re-run"
                           " (interactive or -c); set it with setup_primary(exec=...)")
    exec_path = os.fspath(exec_path)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    main_file = getattr(main, "__file__", None)
    target = [os.path.abspath(exec_path)]
    if spec is not None and main_file and os.path.abspath(main_file) == target[0]:
        target = ["-m", spec.name]  # the primary ran with -m: so does the worker
    return [sys.executable, *settings.get("exec_argv", []), *target, *settings.get("args", [])]


class ForkPlan:
    """Everything to start worker ``worker_id``; ``launch`` uses it once."""

    def __init__(self, settings: Mapping[str, Any], worker_id: int, env: Mapping[str, Any] | None,
                 worker_command: list[str] | None):
        self.worker_id = worker_id
        self.uid = settings.get("uid")
        self.gid = settings.get("gid")
        self.argv = worker_argv(settings, worker_command)
        child_env = dict(os.environ)
        if env:
            child_env.update({str(k): str(v) for k, v in env.items()})
        self.parent_end, self.child_end = socketpair()
        self.extra: list[StdioExtra] = []
        try:
            pass_fds = [self.child_end.fileno()]
            child_env[ENV_WORKER_ID] = str(worker_id)
            child_env[ENV_CHANNEL_FD] = str(self.child_end.fileno())
            child_env[ENV_PPID] = str(os.getpid())
            port = inspect_port(settings)
            if port is not None:
                child_env[ENV_INSPECT_PORT] = str(port)
            stdin, stdout, stderr, self.extra = stdio(settings)
            remap = []
            for target, theirs, _mine in self.extra:
                if theirs is not None:
                    pass_fds.append(theirs)
                    remap.append(f"{target}:{theirs}")
            if remap:
                child_env[ENV_STDIO] = ",".join(remap)
            cwd = settings.get("cwd")
            creds = credentials(self.uid, self.gid)
        except BaseException:
            self.abandon()
            self._close_child_side()
            raise
        self.env = child_env
        self.pass_fds = pass_fds
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.user: int | None = creds.get("user")
        self.group: int | None = creds.get("group")
        self.extra_groups: list[int] | None = creds.get("extra_groups")

    def launch(self, launcher: Launcher[P_co]) -> P_co:
        """Start the worker through ``launcher``; the child's ends of the
        descriptors are closed here whatever happens (it has its own)."""
        try:
            return launcher(self.argv, env=self.env, pass_fds=self.pass_fds, close_fds=True,
                            stdin=self.stdin, stdout=self.stdout, stderr=self.stderr, cwd=self.cwd,
                            user=self.user, group=self.group, extra_groups=self.extra_groups)
        except PermissionError as exc:
            self.abandon()
            raise exec_refused(exc, f"worker {self.worker_id}", self.argv[0], self.uid, self.gid,
                               switching=self.user is not None or self.group is not None) from None
        except OSError:
            self.abandon()
            raise
        finally:
            self._close_child_side()

    def abandon(self) -> None:
        """The worker will not start (or was given up): a late one finds its channel closed."""
        self.parent_end.close()

    def _close_child_side(self) -> None:
        self.child_end.close()
        for _target, theirs, _mine in self.extra:
            if theirs is not None:
                os.close(theirs)
        self.extra = [(target, None, mine) for target, _theirs, mine in self.extra]

    def our_stdio(self) -> list[socket.socket | None]:
        """Our ends of the extra 'pipe' entries (worker.stdio[3:])."""
        return [mine for _target, _theirs, mine in self.extra]


def exec_refused(exc: PermissionError, what: str, program: str, uid: Any, gid: Any, *,
                 switching: bool) -> PermissionError:
    """The error for a process we could not start as ``uid``/``gid``, with
    the likely cause (a root master: that user may not execute the
    interpreter; anyone else: only root may switch users)."""
    who = f"user {uid}" if uid is not None else "this user"
    if gid is not None:
        who += f" (group {gid})"
    if os.geteuid() == 0 or not switching:
        hint = (f"{who} cannot execute {exc.filename or program} or search a directory above it;"
                " install pycluster where that user can read it (e.g. a virtualenv outside a"
                " 0700 home directory)")
    else:
        hint = f"this primary runs as uid {os.geteuid()}; only root may switch users"
    return PermissionError(exc.errno, f"cannot start {what} as {who}: {exc.strerror} ({hint})")


def credentials(uid: int | str | None, gid: int | str | None) -> dict[str, Any]:
    """Popen arguments that drop privileges in the child before exec:
    setgroups (supplementary groups of the target user, never root's),
    then setgid, then setuid."""
    if uid is None and gid is None:
        return {}
    privileged = os.geteuid() == 0
    import grp
    import pwd
    kwargs: dict[str, Any] = {}
    pw = None
    if uid is not None:
        try:
            pw = pwd.getpwnam(uid) if isinstance(uid, str) else pwd.getpwuid(uid)
            kwargs["user"] = pw.pw_uid
        except KeyError:
            if isinstance(uid, str):
                raise SettingsError(f"unknown user {uid!r}") from None
            kwargs["user"] = uid
    if gid is not None:
        try:
            kwargs["group"] = grp.getgrnam(gid).gr_gid if isinstance(gid, str) else gid
        except KeyError:
            raise SettingsError(f"unknown group {gid!r}") from None
    elif pw is not None:
        kwargs["group"] = pw.pw_gid
    elif privileged and "user" in kwargs and kwargs["user"] != os.geteuid():
        # A uid with no passwd entry has no group of its own: the worker
        # would keep ours (root's).
        raise SettingsError(f"user {uid} is not in the user database, so it has no group:"
                            " name one too (--group, or gid)")
    if not privileged:
        # Only root may switch; asking for who we already are is fine (and
        # setgroups would fail without CAP_SETGID), anything else fails in
        # Popen with EPERM, reported by fork().
        if kwargs.get("user") == os.geteuid():
            kwargs.pop("user")
        if kwargs.get("group") == os.getegid():
            kwargs.pop("group")
        return kwargs
    if pw is not None:
        kwargs["extra_groups"] = os.getgrouplist(pw.pw_name, kwargs["group"])
    else:
        kwargs["extra_groups"] = [kwargs["group"]] if "group" in kwargs else []
    return kwargs


def process_credentials(pid: int | str) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str], str] | None:
    """(uids, gids, groups, effective capabilities) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapEff"):
            fields[key] = value.split()
    if len(fields) != 4:
        return None
    return tuple(fields["Uid"]), tuple(fields["Gid"]), frozenset(fields["Groups"]), fields["CapEff"][0]
