"""The env-only tuning knobs, declared like every other setting (base layer).

They have no flag and no TOML key: only ``PYCLUSTER_<NAME>``. They live
below the primary, which reads them, and the master, which checks them all
when ``pycluster run`` starts (``master.config.load``). They are read when
they are needed, never at import: ``pycluster status`` must not die of a bad
value it never uses. A bad value is a :class:`~pycluster.errors.SettingsError`
naming the variable, what it must be and its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import SettingsError
from .settings import Reload, Setting


def _window(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= 65536:
        raise ValueError("expected a whole number of hand-offs in flight per worker, 1 to 65536")
    return number


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not 0 < number <= 86400:  # also refuses nan and inf
        raise ValueError("expected a number of seconds above 0 (at most 86400)")
    return number


def _nice(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if not 0 <= number <= 19:
        raise ValueError("expected a nice increment from 0 (off) to 19")
    return number


def _switch(value: Any) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0 (true/false, yes/no, on/off)")


# The master's environment is fixed when it starts: a reload never changes these.
TUNING: tuple[Setting, ...] = (
    Setting("rr_window", (), _window, 64,
            "Under rr, how many hand-offs a worker may have waiting before the master skips it while"
            " every worker is busy.", toml=False, on_reload=Reload.RESTART),
    Setting("handoff_timeout", (), _seconds, 5.0,
            "Seconds a worker has to take a connection handed to it under rr before the master gives"
            " it to another worker.", toml=False, on_reload=Reload.RESTART),
    Setting("fork_timeout", (), _seconds, 5.0,
            "With --preload: seconds the fork server has to answer a fork request; one that does not"
            " is judged stalled, killed and replaced.", toml=False, on_reload=Reload.RESTART),
    Setting("rr_pairs", (), _switch, True,
            "Under rr, 0 turns off handing the connections of one accept batch off in pairs.",
            toml=False, on_reload=Reload.RESTART),
    Setting("reload_nice", (), _nice, 10,
            "During a reload, how much the old generation's workers yield the CPU to the new ones"
            " booting (added to their nice value, restored when each leaves rotation); 0 turns it off."
            " Applied only where the master may restore it (CAP_SYS_NICE or RLIMIT_NICE), not under reuseport.",
            toml=False, on_reload=Reload.RESTART),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in TUNING}


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return "1" if default else "0"
    return f"{default:g}" if isinstance(default, (int, float)) else str(default)


def read(env: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of tuning variable ``env`` (its default when unset or empty)."""
    setting = BY_ENV[env]
    raw = (os.environ if environ is None else environ).get(env, "").strip()
    if not raw:
        return setting.default
    try:
        return setting.validate(raw)
    except ValueError as exc:
        raise SettingsError(f"environment {env}={raw[:40]!r}: {exc} (default {_shown(setting.default)})") from None


def check(environ: Mapping[str, str] | None = None) -> None:
    """Every tuning variable is valid (SettingsError naming the first that is not)."""
    for setting in TUNING:
        read(setting.env, environ)


def rr_window(environ: Mapping[str, str] | None = None) -> int:
    """``PYCLUSTER_RR_WINDOW``: hand-offs in flight per worker under rr."""
    return int(read("PYCLUSTER_RR_WINDOW", environ))


def handoff_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``PYCLUSTER_HANDOFF_TIMEOUT``: seconds before an untaken hand-off is taken back."""
    return float(read("PYCLUSTER_HANDOFF_TIMEOUT", environ))


def fork_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``PYCLUSTER_FORK_TIMEOUT``: seconds a fork server has to answer a fork request."""
    return float(read("PYCLUSTER_FORK_TIMEOUT", environ))


def reload_nice(environ: Mapping[str, str] | None = None) -> int:
    """``PYCLUSTER_RELOAD_NICE``: the old generation's nice increment during a reload."""
    return int(read("PYCLUSTER_RELOAD_NICE", environ))


def rr_pairs(environ: Mapping[str, str] | None = None) -> bool:
    """``PYCLUSTER_RR_PAIRS``: hand one accept batch's connections off in pairs."""
    return bool(read("PYCLUSTER_RR_PAIRS", environ))
