"""A blocking control client (what the CLI verbs and pyclusterctl use)."""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Iterator

from . import paths, protocol


class NoMaster(Exception):
    """No master answers (exit 3 for status)."""


class Ambiguous(Exception):
    def __init__(self, candidates: list[str]):
        super().__init__("several masters are running; choose one with -n NAME: "
                         + ", ".join(os.path.basename(c)[:-5] for c in candidates))
        self.candidates = candidates


def resolve(name: str | None, control: str | None = None) -> str:
    if control:
        return control
    if name:
        return paths.socket_path(name)
    live = [p for p in paths.candidates() if _alive(p)]
    if not live:
        raise NoMaster(f"no pycluster master is running (looked in {paths.runtime_dir()})")
    if len(live) > 1:
        raise Ambiguous(live)
    return live[0]


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _connect(path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        s.close()
        raise NoMaster(f"no master answers on {path} ({exc.strerror})") from None
    except OSError:
        s.close()
        raise
    return s


def request(path: str, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request, one reply (the reply object: {"ok": ..., ...})."""
    s = _connect(path, timeout)
    try:
        s.sendall(protocol.encode(obj))
        line = s.makefile("rb").readline(protocol.MAX_REQUEST * 64)
    finally:
        s.close()
    if not line:
        raise NoMaster(f"the master on {path} closed the connection without answering")
    return json.loads(line)


def stream(path: str, obj: dict[str, Any], timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """A request whose replies keep coming (logs -f, reload --wait)."""
    s = _connect(path, 10.0)
    s.settimeout(timeout)
    try:
        s.sendall(protocol.encode(obj))
        for line in s.makefile("rb"):
            yield json.loads(line)
    finally:
        s.close()
