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
import socket
from typing import Any

from ...core import tuning
from ...errors import SettingsError
from ...ipc.messages import ENV_FORKSERVER_FD

ENV_FD = ENV_FORKSERVER_FD  # the fork server's end of the socketpair (it also tells pycluster's import)
MAX_MESSAGE = 1 << 20


def fork_timeout() -> float:
    """``PYCLUSTER_FORK_TIMEOUT`` seconds (forking takes milliseconds: a fork
    server this late is stalled). ``pycluster run`` refused a bad value at
    start; a library primary falls back on the default."""
    try:
        return tuning.fork_timeout()
    except SettingsError:
        return float(tuning.BY_ENV["PYCLUSTER_FORK_TIMEOUT"].default)


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.send(json.dumps(obj).encode())
