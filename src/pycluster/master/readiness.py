"""Readiness: pure decisions, no processes.

A worker is *ready* once it listens on every one of the master's listeners
(``listening`` for each key); a master without listeners (a queue consumer,
say) counts a worker ready once it is ``online``, which ``pycluster run``
asks workers to announce only after the app imported. The first generation
is complete when every slot's worker became ready; until then the master is
``starting`` and a worker that dies or never becomes ready is a boot failure
(SPEC 4: the master halts instead of respawning forever).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Protocol

from ..core.common import plural
from .slots import Slot


class Candidate(Protocol):
    """What readiness looks at in a worker."""

    @property
    def state(self) -> Any: ...
    @property
    def listening_keys(self) -> set[str]: ...


def is_ready(worker: Candidate, master_keys: Collection[str]) -> bool:
    """Is ``worker`` ready to serve, given the keys of the master's listeners?"""
    if not master_keys:
        return worker.state in ("online", "listening")
    return set(master_keys) <= worker.listening_keys


def generation_complete(state: str, slots: Iterable[Slot]) -> bool:
    """Did the first generation just become ready (the master still ``starting``)?"""
    return state == "starting" and all(slot.ready for slot in slots)


def laggard(slots: Iterable[Slot]) -> Slot | None:
    """The first slot not ready yet: the one a boot failure names."""
    return next((slot for slot in slots if not slot.ready), None)


def boot_failure(name: str, who: str, why: str, stderr_tail: Iterable[str], *, first: bool = True,
                 shown: bool = False) -> str:
    """What the master says, and ``pycluster run`` prints, when the first
    generation never became ready (``first``), or a worker failed to boot.
    ``shown``: the worker's stderr already reached where this message goes
    (the terminal), so it is pointed at, not printed twice."""
    tail = list(stderr_tail)
    what = "the first generation never became ready" if first else "a worker failed to boot"
    lines = [f"{name}: {what}: {who} {why}"]
    if tail and shown:
        lines[0] += " (its stderr is above)"
    elif tail:
        lines.append(f"last lines of {who}'s stderr:")
        lines.extend("  " + line for line in tail)
    return "\n".join(lines)


def where_it_listens(listening: Iterable[Any], waited: Iterable[Any]) -> str:
    """Why a worker that listens somewhere is not ready: its addresses and the
    master's (an app that binds another port than ``--bind``); "" if none."""
    theirs = ", ".join(map(str, listening))
    if not theirs:
        return ""
    return f" (it listens on {theirs}; the master waits for it on {', '.join(map(str, waited))})"


def stray_listener(who: str, address: Any, waited: Iterable[Any]) -> str:
    """The line the master logs, once per address, when a worker listens on an
    address that is none of the master's listeners (--bind)."""
    ours = ", ".join(map(str, waited))
    return (f"{who} listens on {address}, which is not a --bind address ({ours}): the master shares"
            f" it among the workers, but a worker is ready only once it listens on {ours};"
            f" bind that, or serve pycluster.listeners()")


def format_listener(address: Any) -> str:
    """A listener for the log: HTTP ones as URLs."""
    return str(address) if isinstance(address.address_type, str) or address.address_type == -1 else f"http://{address}"


def ready_summary(name: str, workers: int, policy: str, addresses: Iterable[Any], pid: int,
                  app_addresses: Iterable[Any] = ()) -> str:
    """The line the master logs once the first generation is ready (the addresses the
    app bound itself, outside --bind, marked as such)."""
    shown = [format_listener(a) for a in addresses]
    shown += [f"{format_listener(a)} (bound by the app)" for a in app_addresses]
    listen = ", ".join(shown) or "no listeners"
    return f"{name} ready: {plural(workers, 'worker')}, policy {policy}, {listen} (master pid {pid})"
