"""Where control sockets live (SPEC section 3)."""

from __future__ import annotations

import errno
import os
import stat


def runtime_dir(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("PYCLUSTER_RUNTIME_DIR"):
        return env["PYCLUSTER_RUNTIME_DIR"]
    if env.get("XDG_RUNTIME_DIR"):
        return os.path.join(env["XDG_RUNTIME_DIR"], "pycluster")
    if os.geteuid() == 0:
        return "/run/pycluster"
    return f"/tmp/pycluster-{os.geteuid()}"


def socket_path(name: str, explicit: str | None = None) -> str:
    return explicit or os.path.join(runtime_dir(), f"{name}.sock")


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700 if missing; refuse one we do not own or others can write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create control directory {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"control directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(errno.EPERM, f"control directory {path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o022:
        os.chmod(path, 0o700)


def candidates() -> list[str]:
    """Control sockets in the runtime directory, sorted."""
    base = runtime_dir()
    try:
        names = sorted(n for n in os.listdir(base) if n.endswith(".sock"))
    except OSError:
        return []
    return [os.path.join(base, n) for n in names]
