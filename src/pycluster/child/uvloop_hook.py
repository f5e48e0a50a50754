"""Wrap uvloop for round-robin lanes (:mod:`~pycluster.child.uvloop_lanes`) when it is imported."""

from __future__ import annotations

from types import ModuleType

from .import_hooks import after_import
from .registry import Registry


def install(registry: Registry) -> None:
    """Wrap uvloop now if it is loaded, else when it is imported."""

    def wrap(module: ModuleType) -> None:
        from .uvloop_lanes import wrap as wrap_loop
        wrap_loop(module, registry)

    after_import("uvloop", wrap)
