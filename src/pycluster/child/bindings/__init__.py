"""One class per listener policy on the worker side, chosen once by the
primary's reply ``mode``. Adding a policy: one class here, one entry in
:data:`BINDINGS` (and its handle on the primary side, ``primary/handles/``).
"""

from __future__ import annotations

from .base import Binding, BindingContext, DescriptorBinding, SpareFd, Tomb, running_loop
from .reuseport import ReusePortBinding
from .round_robin import RoundRobinBinding
from .shared import SharedBinding

BINDINGS: dict[str, type[Binding]] = {cls.mode: cls for cls in (RoundRobinBinding, SharedBinding, ReusePortBinding)}

__all__ = ["BINDINGS", "Binding", "BindingContext", "DescriptorBinding", "ReusePortBinding",
           "RoundRobinBinding", "SharedBinding", "SpareFd", "Tomb", "running_loop"]
