"""Taking the control socket path: 0600 from birth, a stale one replaced,
a live one never touched (no asyncio here: run checks this before forking)."""

from __future__ import annotations

import errno
import os
import socket

from . import protocol
from .paths import ensure_private_dir


class ControlSocketInUse(OSError):
    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid else "another process"
        super().__init__(errno.EADDRINUSE, f"control socket {path} is in use by a live master ({who});"
                         " stop it first or choose another --name")
        self.pid = pid


def claim(path: str) -> socket.socket:
    """Bind the control socket (replacing a stale one), 0600 from birth."""
    ensure_private_dir(os.path.dirname(path) or ".")
    if os.path.exists(path):
        pid = probe(path)
        if pid is not False:
            raise ControlSocketInUse(path, pid)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    sock.setblocking(False)
    return sock


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
        import json
        return json.loads(data)["result"]["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        probe_sock.close()
