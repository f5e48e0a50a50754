"""--daemon: double fork with a readiness pipe (``run -d`` returns once the
master is ready, or with its failure's exit code and message)."""

from __future__ import annotations

import os
import sys

from ...ipc.messages import ENV_READY_FD


def daemonize() -> int | None:
    """In the original process: wait and return the exit code. In the
    daemon: return None and carry on (stdio is detached)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        if not data:
            sys.stderr.write("pycluster: the daemon exited before it was ready\n")
            return 1
        code, _, message = data.decode(errors="replace").partition("\n")
        if message.strip():
            sys.stderr.write(message if message.endswith("\n") else message + "\n")
        return int(code or 1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ[ENV_READY_FD] = str(write_fd)
    os.set_inheritable(write_fd, False)
    return None


def report(code: int, message: str = "") -> bool:
    """Tell the waiting `run -d` how it went (once). True if there was one
    to tell: it prints ``message`` itself."""
    fd = os.environ.pop(ENV_READY_FD, None)
    if fd is None:
        return False
    try:
        os.write(int(fd), f"{code}\n{message}".encode())
        os.close(int(fd))
    except OSError:
        return False
    if code == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    return True
