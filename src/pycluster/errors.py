"""Stable error codes and exit statuses (base layer).

Libraries raise; only the CLI exits. Every error carries a stable ``code``
that tools can match on, and a message that says what to do.
"""

from __future__ import annotations

# Exit statuses of ``pycluster run`` (SPEC section 3).
EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_BOOT = 3

# Exit status a worker uses when its bootstrap (not the app) failed: bad
# privileges, a channel that cannot be opened. The supervisor treats it as a
# boot error instead of respawning forever (gunicorn's WORKER_BOOT_ERROR).
WORKER_BOOT_ERROR = 70


class ClusterError(Exception):
    """Base class of pycluster's errors; ``code`` is stable."""

    code = "ECLUSTER"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ProtocolError(ClusterError):
    """A peer sent bytes that are not a valid frame (IPC or control)."""

    code = "EPROTO"


class ChannelClosedError(ClusterError):
    """The IPC channel is closed: nothing more can be sent on it."""

    code = "ERR_IPC_CHANNEL_CLOSED"


class AckTimeoutError(ClusterError):
    """An internal request was not answered in time."""

    code = "ETIMEDOUT"


class NotPrimaryError(ClusterError):
    """A primary-only API was called in a worker (or the reverse)."""

    code = "ERR_NOT_PRIMARY"


class SettingsError(ClusterError, ValueError):
    """A bad value in ``setup_primary`` settings."""

    code = "ERR_INVALID_SETTING"
