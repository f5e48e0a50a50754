"""Stable error codes and exit statuses (base layer).

Libraries raise; only the CLI exits. Every error carries a stable ``code``
that tools can match on, and a message that says what to do.
"""

from __future__ import annotations

# -- exit statuses: one table for the whole project ---------------------------------
# A process's exit status is part of the protocol (STYLE habit 7): scripts,
# systemd and the master itself act on these numbers, so each has one name.

# ``pycluster run`` (SPEC section 3):
EXIT_OK = 0  # a graceful stop
EXIT_RUNTIME = 1  # a runtime error: a bind failure, a control socket in use by a live master
EXIT_USAGE = 2  # a usage or config error (the message names the flag, file or key)
EXIT_BOOT = 3  # the first generation never became ready (workers crash or time out at boot)

# The control verbs (status, stop, scale, reload, logs, top; SPEC section 3):
# 0 done; EXIT_FAILED the master refused the request (its error reply), could not
# be reached, or the verb's outcome failed (a reload aborted, a stop that timed
# out); EXIT_USAGE a bad argument, or several masters and no ``-n``;
# EXIT_NO_MASTER no master answers (``status`` documents it).
EXIT_FAILED = 1
EXIT_NO_MASTER = 3

# A worker (or the fork server's child about to become one) exits with this
# when its bootstrap, not the app, failed: no channel, bad privileges, never
# re-parented to the master. Respawning it cannot help: the master treats it as
# a boot failure and halts instead of respawning forever (SPEC section 4;
# gunicorn's WORKER_BOOT_ERROR, 3 there; 70 is EX_SOFTWARE of sysexits.h,
# which no Python exception exit produces).
WORKER_BOOT_ERROR = 70

# A worker exits with this when the target itself is a usage error: it is no
# app pycluster can run (neither a callable nor an ASGI or WSGI application),
# or serving it needs an extra that is not installed. Its last stderr line
# says what was found and what to do; ``pycluster run`` prints that line and
# exits EXIT_USAGE instead of respawning (64 is EX_USAGE of sysexits.h).
WORKER_USAGE_ERROR = 64

#: Every exit status by name, for documentation and tests.
EXIT_CODES = {
    "EXIT_OK": EXIT_OK, "EXIT_RUNTIME": EXIT_RUNTIME, "EXIT_USAGE": EXIT_USAGE, "EXIT_BOOT": EXIT_BOOT,
    "EXIT_FAILED": EXIT_FAILED, "EXIT_NO_MASTER": EXIT_NO_MASTER, "WORKER_BOOT_ERROR": WORKER_BOOT_ERROR,
    "WORKER_USAGE_ERROR": WORKER_USAGE_ERROR,
}


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


class ControlError(ClusterError):
    """A control verb failed on the client's side: no master, a refused request,
    an unreadable reply. The CLI prints the message and exits with ``exit_code``."""

    code = "ECONTROL"

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, *, code: str | None = None):
        super().__init__(message, code=code)
        self.exit_code = exit_code
