"""The primary's settings: setup_primary()'s defaults and validation, the
scheduling policy check, and the env-only hand-off tuning knobs.

Pure functions of their arguments (and of sys.argv / os.environ where Node
reads them too): no process is started and nothing is bound here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..core import tuning as _tuning
from ..core.common import POLICY_NAMES, SCHED_RR
from ..core.common import Record as _Record
from ..errors import SettingsError

SETTING_KEYS = ("exec", "args", "exec_argv", "silent", "stdio", "uid", "gid", "cwd",
                "inspect_port", "serialization")

STDIO_WORDS = ("pipe", "inherit", "ignore", "ipc", None)


def default_settings() -> dict[str, Any]:
    """Node's defaults, read at call time (test-cluster-setup-primary-argv)."""
    main = sys.argv[0] if sys.argv else ""
    exec_path = os.path.abspath(main) if main and main not in ("-c", "-") else None
    return {
        "args": list(sys.argv[1:]),
        "exec": exec_path,
        "exec_argv": interpreter_options(list(getattr(sys, "orig_argv", [])), sys.argv),
        "silent": False,
    }


def interpreter_options(orig_argv: list[str], argv: list[str]) -> list[str]:
    """The interpreter options exactly as given (Node's execArgv): what stands
    in sys.orig_argv between the interpreter and the script (or -m/-c)."""
    if len(orig_argv) <= len(argv):
        return []
    opts = orig_argv[1:len(orig_argv) - len(argv)]
    # With -m/-c, sys.argv[0] replaced the module name / command: drop the switch.
    if opts and opts[-1] in ("-m", "-c"):
        opts = opts[:-1]
    elif opts and (opts[-1].startswith("-m") or opts[-1].startswith("-c")) and len(opts[-1]) > 2 \
            and not opts[-1].startswith("--"):
        opts = opts[:-1]
    return opts


def _strings(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
        raise SettingsError(f"setting {key!r} must be a list of strings, not {value!r}")


def _path(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise SettingsError(f"setting {key!r} must be a path, not {value!r}")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SettingsError(f"setting {key!r} must be True or False, not {value!r}")


def _who(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, (int, str)):
        raise SettingsError(f"setting {key!r} must be a number or a name, not {value!r}")


def _serialization(key: str, value: Any) -> None:
    if value != "json":
        raise SettingsError(f"setting 'serialization' must be 'json' (pycluster never unpickles"
                            f" what a worker sends), not {value!r}")


def _stdio(key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise SettingsError(f"setting 'stdio' must be a list, not {value!r}")
    for entry in value:
        if not (entry in STDIO_WORDS or (isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0)):
            raise SettingsError(f"bad stdio entry {entry!r}: use 'pipe', 'inherit',"
                                " 'ignore', 'ipc', None or a file descriptor")


def _inspect_port(key: str, value: Any) -> None:
    check_port(value)


# setting -> its check (raises SettingsError naming the setting)
_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "exec": _path, "cwd": _path,
    "args": _strings, "exec_argv": _strings,
    "silent": _flag,
    "uid": _who, "gid": _who,
    "serialization": _serialization,
    "stdio": _stdio,
    "inspect_port": _inspect_port,
}
assert set(_CHECKS) == set(SETTING_KEYS)


def validate_settings(options: Mapping[str, Any]) -> None:
    """Check setup_primary()'s options; SettingsError naming the first bad one."""
    for key, value in options.items():
        check = _CHECKS.get(key)
        if check is None:
            raise SettingsError(f"unknown setting {key!r}; known settings: {', '.join(SETTING_KEYS)}")
        check(key, value)


def check_port(value: Any) -> None:
    """inspect_port: a port number, a function returning one, or None."""
    if callable(value) or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SettingsError(f"inspect_port must be a port number 0-65535 or a function, not {value!r}")


def inspect_port(settings: Mapping[str, Any]) -> int | None:
    """The inspect port for the next worker (a function is called once per worker)."""
    value = settings.get("inspect_port")
    if value is None:
        return None
    if callable(value):
        value = value()
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise SettingsError(f"inspect_port function returned {value!r}, not a port 0-65535")
    assert isinstance(value, int)
    return value


def check_policy(policy: Any) -> int:
    """The scheduling policy, checked when it is frozen (at the first setup/fork/listener)."""
    if policy not in POLICY_NAMES:
        raise SettingsError(f"scheduling_policy must be SCHED_RR, SCHED_NONE or SCHED_REUSEPORT,"
                            f" not {policy!r}")
    assert isinstance(policy, int)
    return policy


DEFAULT_POLICY = SCHED_RR


# -- env-only tuning of the round-robin hand-off ---------------------------------
# Declared, with their validators, in core/tuning.py (the table the master checks at start).

ENV_RR_WINDOW = "PYCLUSTER_RR_WINDOW"
ENV_HANDOFF_TIMEOUT = "PYCLUSTER_HANDOFF_TIMEOUT"
ENV_RR_PAIRS = "PYCLUSTER_RR_PAIRS"


def env_tuning(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """A tuning variable's value (its default when unset or empty); SettingsError naming it when bad."""
    return _tuning.read(name, environ)


class Tuning(_Record):
    """The round-robin hand-off knobs: hand-offs in flight per worker, and how
    long one may wait in a worker's lane before the primary takes it back."""

    __slots__ = ("window", "handoff_timeout", "pairs")
    window: int
    handoff_timeout: float
    pairs: bool
    _defaults = {"window": _tuning.BY_ENV[ENV_RR_WINDOW].default,
                 "handoff_timeout": _tuning.BY_ENV[ENV_HANDOFF_TIMEOUT].default,
                 "pairs": _tuning.BY_ENV[ENV_RR_PAIRS].default}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tuning:
        """Read (and check) when the policy is frozen, not at import: `pycluster
        status` must not die of a bad value it never uses."""
        return cls(window=_tuning.rr_window(environ), handoff_timeout=_tuning.handoff_timeout(environ),
                   pairs=_tuning.rr_pairs(environ))


DEFAULT_TUNING = Tuning()
