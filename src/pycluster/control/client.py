"""A blocking control client (what the CLI verbs and pyclusterctl use).

:func:`request` and :func:`stream` talk to a master and raise the client's own
exceptions (:class:`NoMaster`, :class:`UntrustedSocket`, ``OSError``);
:func:`find` and :func:`call` are what a verb uses: they turn every failure
into a :class:`~pycluster.errors.ControlError` carrying the exit status the
CLI exits with (SPEC section 3), so that only the CLI exits.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from typing import Any, Protocol

from ..errors import EXIT_FAILED, EXIT_NO_MASTER, EXIT_USAGE, ControlError
from . import paths, protocol

REQUEST_TIMEOUT = 10.0  # seconds a verb waits for the master's reply (then: exit 3, no master answers)

_CRED = struct.Struct("3i")


class NoMaster(Exception):
    """No master answers (exit 3 for status)."""


class NoAnswer(NoMaster):
    """A master accepted the connection but did not answer in time (frozen, overloaded)."""


class UntrustedSocket(PermissionError):
    """The socket belongs to another user: nothing is sent to it."""

    def __str__(self) -> str:
        return str(self.strerror)


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
    foreign: list[str] = []
    live = [p for p in paths.candidates() if _alive(p, foreign)]
    if not live:
        ignored = "".join(f"; ignored {reason}" for reason in foreign)
        raise NoMaster(f"no pycluster master is running (looked in {paths.runtime_dir()}){ignored}")
    if len(live) > 1:
        raise Ambiguous(live)
    return live[0]


def live_names() -> list[str]:
    """The names of the masters answering in the runtime directory (what
    ``-n`` completes to): sockets nobody listens on are left out."""
    ignored: list[str] = []
    return [os.path.basename(p).removesuffix(".sock") for p in paths.candidates() if _alive(p, ignored)]


def _alive(path: str, foreign: list[str]) -> bool:
    try:
        s = _connect(path, 0.5)
    except UntrustedSocket as exc:
        foreign.append(str(exc))
        return False
    except (NoMaster, OSError):
        return False
    s.close()
    return True


def check_owner(path: str) -> None:
    """Refuse a socket another user created (a master runs as us or as root): it
    could pose as our master and read what we send it."""
    try:
        st = os.stat(path)  # what connect() reaches, through any symlink
    except OSError:
        return  # connect() reports it
    if not stat.S_ISSOCK(st.st_mode):
        raise UntrustedSocket(errno.ENOTSOCK, f"{path} is not a socket")
    _check_uid(path, st.st_uid, "belongs to")


def _check_uid(path: str, uid: int, what: str) -> None:
    if uid not in (os.geteuid(), 0):
        raise UntrustedSocket(errno.EPERM, f"refusing to talk to {path}: it {what} uid {uid}{paths.user_name(uid)},"
                              " not to this user or root (another user may have put it there)")


def _connect(path: str, timeout: float) -> socket.socket:
    check_owner(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        # Who listens (SO_PEERCRED: the listener's credentials): the name may have changed hands since the stat.
        _pid, uid, _gid = _CRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        _check_uid(path, uid, "is served by a process of")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        s.close()
        raise NoMaster(f"no master answers on {path} ({exc.strerror})") from None
    except TimeoutError:
        s.close()
        raise NoAnswer(f"the master on {path} did not accept the connection within {timeout:g}s") from None
    except OSError:
        s.close()
        raise
    return s


def request(path: str, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request, one reply (the reply object: {"ok": ..., ...})."""
    s = _connect(path, timeout)
    try:
        try:
            s.sendall(protocol.encode(obj))
        except (BrokenPipeError, ConnectionResetError):
            # The master answered without reading (at its client cap, "busy") and hung up:
            # its reply is still ours to read.
            pass
        try:
            line = s.makefile("rb").readline(protocol.MAX_REQUEST * 64)
        except TimeoutError:
            raise NoAnswer(f"the master on {path} did not answer within {timeout:g}s"
                           " (it may be stopped or overloaded)") from None
        except ConnectionResetError:
            line = b""
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


class Echo(Protocol):
    """Where a verb's client side prints: a line on stdout, or on stderr with ``err=True``."""

    def __call__(self, message: str, *, err: bool = False) -> None: ...


def find(name: str | None, control: str | None) -> str:
    """The control socket to talk to (:func:`resolve`); ControlError when none or several."""
    try:
        return resolve(name, control)
    except NoMaster as exc:
        raise ControlError(str(exc), EXIT_NO_MASTER) from exc
    except Ambiguous as exc:
        raise ControlError(str(exc), EXIT_USAGE) from exc


def call(path: str, obj: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
    """One request; its result, or a ControlError that says why there is none."""
    try:
        reply = request(path, obj, timeout=timeout)
    except NoMaster as exc:  # nothing listens, or the master did not answer within `timeout`
        raise ControlError(str(exc), EXIT_NO_MASTER) from exc
    except UntrustedSocket as exc:
        raise ControlError(str(exc), EXIT_FAILED) from exc
    except OSError as exc:
        raise ControlError(f"cannot reach the master on {path}: {exc}", EXIT_FAILED) from exc
    if not reply.get("ok"):
        err = reply.get("error") or {}
        raise ControlError(f"{err.get('message', 'request failed')} ({err.get('code', '?')})", EXIT_FAILED)
    return reply.get("result")
