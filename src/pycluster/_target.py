"""A worker of ``pycluster run``: ``python -m pycluster._target TARGET [ARGS...]``.

``module:callable`` imports the module (the working directory is on
sys.path) and calls it (a coroutine function runs under asyncio);
``path/to/script.py`` runs the script as ``__main__``, so a Node-style
script with an ``is_primary`` branch works unchanged. When the app returns,
the worker exits (0, or the int it returned); the master replaces it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import runpy
import sys

import pycluster  # noqa: F401  - boots the worker side first


def load(target: str):
    if target.endswith(".py") or (os.sep in target and ":" not in target):
        return None
    module_name, sep, attr = target.partition(":")
    if not sep:
        attr = "main"
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"pycluster: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise SystemExit(f"pycluster: {target!r} is not callable")
    return obj


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m pycluster._target TARGET [ARGS...]", file=sys.stderr)
        return 2
    target = sys.argv[1]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    fn = load(target)
    if fn is None:
        path = os.path.abspath(target)
        sys.argv = [path, *sys.argv[2:]]
        sys.path.insert(0, os.path.dirname(path))
        runpy.run_path(path, run_name="__main__")
        return 0
    sys.argv = [target, *sys.argv[2:]]
    result = fn()
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


async def _await(awaitable):
    return await awaitable


if __name__ == "__main__":
    sys.exit(main())
