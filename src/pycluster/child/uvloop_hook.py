"""Wrap uvloop for round-robin lanes (:mod:`~pycluster.child.uvloop_lanes`) when it is imported.

An import hook, so a worker that never uses uvloop pays nothing (and boots
without asyncio); uvloop imported before the worker booted (a ``--preload``
fork server) is wrapped at once.
"""

from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType
from typing import Any

from .registry import Registry


class _Hook(importlib.abc.MetaPathFinder):
    """Wraps uvloop right after its import."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "uvloop":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec
        registry = self.registry

        def exec_and_wrap(module: ModuleType) -> None:
            exec_module(module)
            from .uvloop_lanes import wrap
            wrap(module, registry)

        loader.exec_module = exec_and_wrap  # type: ignore[union-attr,method-assign]
        return spec


def install(registry: Registry) -> None:
    """Wrap uvloop now if it is loaded, else when it is imported."""
    module = sys.modules.get("uvloop")
    if module is not None:
        from .uvloop_lanes import wrap
        wrap(module, registry)
        return
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook(registry))
