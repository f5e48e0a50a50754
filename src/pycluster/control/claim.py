"""Taking the control socket path: 0600 from birth, a stale one replaced,
a live one never touched (no asyncio here: run checks this before forking).

Check-unlink-bind races: two masters that both find the old socket dead both
unlink and bind, and one ends up listening on a name the other removed. So
the new socket is bound and listening under a private name first; then,
holding a lock (flock on ``NAME.sock.lock`` next to it, opened with
O_NOFOLLOW), the old one is probed and only if it is dead (or absent) is the
private name renamed over the public one: rename(2) replaces it atomically,
and the next claimer, under the same lock, finds a live socket there.
A name that is not a socket, or a socket another user (neither us nor root)
created, is never replaced: the error names it and its owner.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator

from . import protocol
from .paths import ControlPathError, ensure_private_dir, user_name

LOCK_TIMEOUT = 5.0  # seconds a claim waits for another claim (at most its probe, ~1 s) to finish
_LOCK_POLL = 0.01


class ControlSocketInUse(OSError):
    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid else "another process"
        super().__init__(errno.EADDRINUSE, f"control socket {path} is in use by a live master ({who});"
                         " stop it first or choose another --name")
        self.pid = pid


def claim(path: str) -> socket.socket:
    """Bind the control socket (replacing a stale one), 0600 from birth."""
    return claim_with_identity(path)[0]


def claim_with_identity(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """:func:`claim`, plus the (st_dev, st_ino) of the name it took, for :func:`release`."""
    directory = os.path.dirname(path) or "."
    ensure_private_dir(directory)
    sock, private = _bind_private(path)
    try:
        with _locked(path):
            if existing(path):
                pid = probe(path)
                if pid is not False:
                    raise ControlSocketInUse(path, pid if isinstance(pid, int) else None)
            os.rename(private, path)
            st = os.lstat(path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(private)
        raise
    return sock, (st.st_dev, st.st_ino)


def release(path: str, identity: tuple[int, int] | None) -> None:
    """Remove the control socket at exit, only if the name is still the one we took."""
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):
            stack.enter_context(_locked(path, timeout=1.0))
        try:
            st = os.lstat(path)
        except OSError:
            return
        if identity is None or (st.st_dev, st.st_ino) == tuple(identity):
            with contextlib.suppress(OSError):
                os.unlink(path)


def check_free(path: str) -> None:
    """Raise unless ``path`` is free or a stale socket of ours (run checks this before forking)."""
    if existing(path):
        pid = probe(path)
        if pid is not False:
            raise ControlSocketInUse(path, pid if isinstance(pid, int) else None)


def existing(path: str) -> bool:
    """True if a socket of ours (or root's) is at ``path``; False if nothing is there.
    Anything else there is refused: it is not ours to replace."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ControlPathError(exc.errno, f"control socket {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise ControlPathError(errno.EEXIST, f"control socket path {path} exists and is {kind};"
                               " refusing to replace it (remove it or choose another --control)")
    if st.st_uid not in (os.geteuid(), 0):
        raise ControlPathError(errno.EPERM, f"control socket {path} belongs to uid {st.st_uid}"
                               f"{user_name(st.st_uid)}, not to this user or root: another user created it;"
                               " remove it or choose another --control / --name")
    return True


def _bind_private(path: str) -> tuple[socket.socket, str]:
    """A listening socket, 0600 from birth (umask around bind: no chmod window), under a
    random name in ``path``'s directory, no longer than the public name where possible
    (unix socket paths are limited to 107 bytes)."""
    directory, base = os.path.split(path)
    size = max(6, min(12, len(base)))
    for _ in range(8):
        private = os.path.join(directory, "." + secrets.token_hex(size)[:size - 1])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(private)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            if exc.errno is None:  # "AF_UNIX path too long"
                raise ControlPathError(errno.ENAMETOOLONG, f"control socket path {path} is too long for a"
                                       " unix socket (at most 107 bytes, with room for a temporary name"
                                       " beside it)") from None
            raise ControlPathError(exc.errno, f"cannot create control socket in {directory}: {exc.strerror}") \
                from None
        finally:
            os.umask(old)
        try:
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(private)
            raise
        return sock, private
    raise ControlPathError(errno.EADDRINUSE, f"cannot find a free temporary name in {directory}")


@contextlib.contextmanager
def _locked(path: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``path + ".lock"`` (flock), for the check-and-rename of a claim or a release.

    The lock file is removed before it is released, so a waiter may end up
    holding a lock on a name that no longer exists: it checks, once locked,
    that the name still leads to its file, and starts over if not."""
    import fcntl
    directory, base = os.path.split(path)
    lock_path = path + ".lock"
    name = base + ".lock"
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    deadline = time.monotonic() + timeout
    fd = -1
    try:
        while True:
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                             | os.O_NOCTTY, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise ControlPathError(exc.errno, f"cannot open the lock file {lock_path}: {exc.strerror}") \
                    from None
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
                os.close(fd)
                fd = -1
                raise ControlPathError(errno.EPERM, f"lock file {lock_path} is not a regular file of this user"
                                       f" or root (uid {st.st_uid}{user_name(st.st_uid)}); remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                fd = -1
                if time.monotonic() > deadline:
                    raise ControlPathError(errno.ETIMEDOUT, f"lock file {lock_path} stayed locked for"
                                           f" {timeout:g}s by another process") from None
                time.sleep(_LOCK_POLL)
                continue
            try:
                named = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                named = None
            if named is not None and (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino):
                break
            os.close(fd)
            fd = -1
        yield
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            os.close(fd)
        os.close(dir_fd)


def probe(path: str) -> int | None | bool:
    """False if nothing listens at ``path``; else the live master's pid (or None)."""
    probe_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe_sock.settimeout(1.0)
    try:
        probe_sock.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return None
    try:
        probe_sock.sendall(protocol.encode({"cmd": "status"}))
        data = probe_sock.makefile("rb").readline(protocol.MAX_REQUEST)
        return json.loads(data)["result"]["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        probe_sock.close()
