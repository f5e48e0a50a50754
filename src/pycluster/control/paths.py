"""Where control sockets live (SPEC section 3)."""

from __future__ import annotations

import errno
import os
import stat

from ..ipc.messages import ENV_RUNTIME_DIR


class ControlPathError(OSError):
    """A control path pycluster must not use; ``str()`` is the message alone."""

    def __str__(self) -> str:
        return str(self.strerror)


def runtime_dir(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(ENV_RUNTIME_DIR):
        return env[ENV_RUNTIME_DIR]
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "pycluster")
    if os.geteuid() == 0:
        return "/run/pycluster"
    return f"/tmp/pycluster-{os.geteuid()}"


def socket_path(name: str, explicit: str | None = None) -> str:
    return explicit or os.path.join(runtime_dir(), f"{name}.sock")


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700 when it is missing; use an existing one as it is.

    A directory pycluster did not create is never chmodded (``--control
    /tmp/app.sock`` must not turn ``/tmp`` into 0700): the socket's own mode
    (0600 from birth) keeps other users out. One that belongs to another
    user (neither us nor root) is refused: its owner controls the names in it.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(path, 0o700)  # the umask can only take bits away from 0700
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlPathError(exc.errno, f"cannot create control directory {path}: {exc.strerror}") from None
    try:
        link, st = os.lstat(path), os.stat(path)
    except OSError as exc:
        raise ControlPathError(exc.errno, f"control directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlPathError(errno.ENOTDIR, f"control directory {path} is not a directory")
    for what, uid in (("is a symbolic link that belongs", link.st_uid), ("belongs", st.st_uid)):
        if uid not in (os.geteuid(), 0):
            raise ControlPathError(errno.EPERM, f"control directory {path} {what} to uid {uid}{user_name(uid)},"
                                   " not to this user or root")


def user_name(uid: int) -> str:
    """The uid's name as ' (name)' for a message; '' when it has none."""
    import pwd
    try:
        return f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return ""


def candidates() -> list[str]:
    """Control sockets in the runtime directory, sorted."""
    base = runtime_dir()
    try:
        names = sorted(n for n in os.listdir(base) if n.endswith(".sock"))
    except OSError:
        return []
    return [os.path.join(base, n) for n in names]
