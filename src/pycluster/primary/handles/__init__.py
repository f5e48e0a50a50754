"""Listener strategies behind one tiny interface (Node's handles): see
``base.Handle``. ``primary.listeners.POLICIES`` picks one per listener, once,
when it is created; a new policy is one module here plus one entry there.
"""

from __future__ import annotations

from .base import Handle
from .reuseport import ReusePortHandle
from .round_robin import RoundRobinHandle
from .shared import SharedHandle

__all__ = ["Handle", "RoundRobinHandle", "SharedHandle", "ReusePortHandle"]
