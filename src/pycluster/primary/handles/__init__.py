"""Listener strategies behind one tiny interface (Node's handles).

Each handle owns one primary-side listener and answers two questions:
``add(worker) -> (reply, fds)`` (what a worker that binds this address gets)
and ``remove(worker) -> bool`` (True when the last worker has left). The
engine picks the strategy once per listener in ``handle_for``.
"""

from __future__ import annotations

from .reuseport import ReusePortHandle
from .round_robin import RoundRobinHandle
from .shared import SharedHandle

__all__ = ["RoundRobinHandle", "SharedHandle", "ReusePortHandle"]
