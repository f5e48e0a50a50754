"""A pidfile that is never stolen from a live master: flock'ed while held.

The master often runs as root and writes its pidfile in a directory another
user can write (the service user's). So the name is opened through the
directory's fd with O_NOFOLLOW: a symlink planted there is refused, never
followed; an existing file is reused only when it is a regular file of ours
with one link (else root would truncate whatever it points at). At exit the
name is removed only if it is still our file (same inode, our pid inside).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat


class PidFileError(OSError):
    pass


_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class PidFile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.fd: int | None = None
        self._dir_fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        directory, base = os.path.split(self.path)
        try:
            dir_fd = os.open(directory or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise PidFileError(exc.errno, f"cannot open the pidfile's directory {directory}: {exc.strerror}") \
                from None
        try:
            fd = self._open(dir_fd, base)
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            os.close(dir_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise PidFileError(errno.EEXIST, f"pidfile {self.path} is held by a running master"
                                   f" (pid {holder or '?'})") from None
            raise PidFileError(exc.errno, f"cannot lock pidfile {self.path}: {exc.strerror}") from None
        self._pid = os.getpid()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self._pid}\n".encode(), 0)
        self.fd, self._dir_fd = fd, dir_fd

    def _open(self, dir_fd: int, base: str) -> int:
        try:
            return os.open(base, _OPEN | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PidFileError(exc.errno, f"cannot create pidfile {self.path}: {exc.strerror}") from None
        try:
            fd = os.open(base, _OPEN, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PidFileError(exc.errno, f"pidfile {self.path} is a symbolic link; refusing to follow it"
                                   " (remove it, or choose a --pidfile in a directory only you can write)") \
                    from None
            raise PidFileError(exc.errno, f"cannot open pidfile {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != os.geteuid():
            problem = f"belongs to uid {st.st_uid}{_user(st.st_uid)}, not to this user"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links"
        if problem:
            os.close(fd)
            raise PidFileError(errno.EPERM, f"pidfile {self.path} {problem}; refusing to overwrite it"
                               " (remove it, or choose another --pidfile)")
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        fd, dir_fd = self.fd, self._dir_fd
        self.fd = self._dir_fd = None
        assert dir_fd is not None  # both are set together
        try:
            if os.getpid() == self._pid and self._still_ours(fd, dir_fd):
                os.unlink(os.path.basename(self.path), dir_fd=dir_fd)
        except OSError:
            pass
        finally:
            os.close(fd)
            os.close(dir_fd)

    def _still_ours(self, fd: int, dir_fd: int) -> bool:
        """The name still leads to the file we locked, and it still holds our pid."""
        try:
            named = os.stat(os.path.basename(self.path), dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return False
        mine = os.fstat(fd)
        if (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
            return False
        return os.pread(fd, 32, 0).decode(errors="replace").strip() == str(self._pid)


def _user(uid: int) -> str:
    import pwd
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""
