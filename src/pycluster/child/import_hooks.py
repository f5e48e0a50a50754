"""Run a callback right after a module is imported in a worker (or at once if it is loaded).

A worker adapts a few servers to the cluster when, and only if, the app
imports them: uvloop's ``create_server`` for rr lanes (``uvloop_lanes``), and
uvicorn's shutdown for the drain (``pycluster.serve.selfrun``). A meta-path
finder wraps the module's loader, so a worker that never imports them pays
one dictionary lookup per import and boots without asyncio; a module imported
before the worker booted (by a ``--preload`` fork server) is patched at once.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

_after: dict[str, list[Callable[[ModuleType], None]]] = {}


class _Hook(importlib.abc.MetaPathFinder):
    """Wraps the loader of the modules named in ``_after``."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        callbacks = _after.get(fullname)
        if not callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = getattr(spec.loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            for callback in _after.get(fullname, ()):
                callback(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[union-attr,method-assign]
        return spec


def after_import(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``name`` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _after.setdefault(name, []).append(callback)
    if not any(isinstance(f, _Hook) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())
