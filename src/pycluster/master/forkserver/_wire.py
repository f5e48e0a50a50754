"""What the master and its fork server agree on.

They talk over a SOCK_SEQPACKET socketpair: one JSON object per datagram,
file descriptors (the worker's channel and stdio) with SCM_RIGHTS. Master ->
server: ``{"id": N, "env": {...}, "targets": [fd numbers]}`` with one fd per
target; server -> master: ``{"ready": pid}``, ``{"error": text}`` (the app
failed to import; the server exits 1), ``{"id": N, "pid": P}`` or
``{"id": N, "fail": text}``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

ENV_FD = "PYCLUSTER_FORKSERVER_FD"  # the fork server's end of the socketpair (it also tells pycluster's import)
MAX_MESSAGE = 1 << 20
_FORK_TIMEOUT = 5.0  # forking takes milliseconds: a fork server this late is stalled


def fork_timeout() -> float:
    """``PYCLUSTER_FORK_TIMEOUT`` seconds, or 5 when unset or not a positive number."""
    try:
        value = float(os.environ.get("PYCLUSTER_FORK_TIMEOUT") or _FORK_TIMEOUT)
    except ValueError:
        return _FORK_TIMEOUT
    return value if value > 0 else _FORK_TIMEOUT


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.send(json.dumps(obj).encode())
