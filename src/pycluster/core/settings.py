"""How a setting is declared (base layer): once, with everything that uses it.

A :class:`Setting` names its TOML key, its flags, its ``PYCLUSTER_*``
environment variable, its validator, default and help, and how a reload
applies a changed value. ``pycluster run``'s settings
(``pycluster.master.config.SETTINGS``) and the env-only tuning knobs
(``pycluster.core.tuning.TUNING``) are both declared with it; the
declaration lives here, below both the primary (which reads the tuning
knobs) and the master.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Reload(enum.Enum):
    """How ``pycluster reload`` applies a changed value (the config file is re-read first)."""

    LIVE = "live"
    """At once: the running workers and the master's checks use the new value."""
    NEXT_GENERATION = "next generation"
    """To the workers the reload starts (and every worker after them)."""
    RESTART = "restart"
    """Only a new master can change it: the reload keeps the old value and says so in a note."""


@dataclass(frozen=True)
class Setting:
    name: str                      # TOML key and attribute name
    flags: tuple[str, ...]         # click flags (none for the positional TARGET and for env-only knobs)
    validate: Callable[[Any], Any]  # raises ValueError("expected ...") for a bad value
    default: Any
    help: str
    metavar: str = ""
    multiple: bool = False
    is_flag: bool = False
    env_split: str | None = None   # how PYCLUSTER_<NAME> holds several values
    toml: bool = True              # a config-file key (False: set through the environment only)
    on_reload: Reload = field(kw_only=True)  # every setting says how a reload applies it

    @property
    def env(self) -> str:
        return "PYCLUSTER_" + self.name.upper()

    @property
    def choices(self) -> tuple[str, ...]:
        """The words a value may be, from the metavar (``rr|none|reuseport``;
        ``N|auto`` gives ``auto``): what shell completion offers."""
        if "|" not in self.metavar:
            return ()
        return tuple(word for word in self.metavar.split("|") if word.islower())

    def default_text(self) -> str:
        """The default as ``--help`` and the man page show it."""
        value = self.default
        if value is None:
            return "unset"
        if self.is_flag:
            return "off" if not value else "on"
        if isinstance(value, (list, tuple, dict)) and not value:
            return "none"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    @property
    def env_only(self) -> bool:
        """A tuning knob: no flag, no TOML key, only ``PYCLUSTER_<NAME>``."""
        return not self.flags and not self.toml
