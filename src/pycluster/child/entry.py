"""A worker of ``pycluster run``: ``python -m pycluster.child.entry TARGET [ARGS...]``.

``module:attr`` imports the module (the working directory is on sys.path)
and looks at ``attr`` (:mod:`pycluster.serve.detect`, SPEC 8): a callable
with no required parameters is called (a coroutine function runs under
asyncio); an ASGI or a WSGI application is served on the master's listeners.
``path/to/script.py`` runs the script as ``__main__``, so a Node-style
script with an ``is_primary`` branch works unchanged. When the app returns,
the worker exits (0, or the int it returned); the master replaces it. A
target that is no app pycluster can run exits WORKER_USAGE_ERROR with one line.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pycluster  # noqa: F401  - boots the worker side first
from pycluster.child.runtime import announce_online
from pycluster.errors import WORKER_USAGE_ERROR


def load(target: str) -> Any:
    """The object ``module:attr`` names (None for a script path)."""
    if target.endswith(".py") or (os.sep in target and ":" not in target):
        return None
    module_name, sep, attr = target.partition(":")
    if not sep:
        attr = "main"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - reported, then the worker exits 1
        _report_import_error(target, exc)
        raise SystemExit(1) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"pycluster: {module_name!r} has no attribute {attr!r}") from None
    return obj


def prepare(obj: Any, target: str) -> Callable[[], Any]:
    """What the worker calls to run the app (pycluster.serve.detect), or a
    one-line usage error and exit WORKER_USAGE_ERROR."""
    from pycluster.serve.detect import UsageError
    from pycluster.serve.detect import prepare as serve_prepare
    from pycluster.serve.options import ServeOptions
    try:
        _interface, fn = serve_prepare(obj, target, ServeOptions.take())
    except UsageError as exc:
        sys.stderr.write(f"pycluster: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(WORKER_USAGE_ERROR) from None
    return fn


def _report_import_error(target: str, exc: BaseException) -> None:
    sys.stderr.write(f"pycluster: cannot load {target!r}:\n")
    _report_app_error(exc)


def _report_app_error(exc: BaseException) -> None:
    """The app's traceback without pycluster's and importlib's frames above it."""
    import traceback
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename == __file__
                              or "importlib" in tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    sys.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))
    sys.stderr.flush()


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m pycluster.child.entry TARGET [ARGS...]", file=sys.stderr)
        return 2
    target = sys.argv[1]
    from pycluster.serve import selfrun
    selfrun.install()  # uvicorn.run() by the app drains as a served app does
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = load(target)
    if obj is None:
        path = os.path.abspath(target)
        sys.argv = [path, *sys.argv[2:]]
        sys.path.insert(0, os.path.dirname(path))
        with open(path, "rb") as fh:
            code = compile(fh.read(), path, "exec")  # a syntax error fails the boot
        announce_online()
        globs = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
        exec(code, globs)
        return 0
    fn = prepare(obj, target)
    announce_online()  # the app imported: this worker counts as up
    sys.argv = [target, *sys.argv[2:]]
    return call(fn)


def call(fn: Callable[[], Any]) -> int:
    """Run the app's callable (a coroutine function under asyncio); its exit code."""
    result = fn()
    if inspect.isawaitable(result):
        import asyncio  # only for an async app: a worker's boot stays without asyncio
        result = asyncio.run(_await(result))
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


if __name__ == "__main__":
    from pycluster.child import runtime as child
    try:
        try:
            code = main()
        except Exception as exc:  # noqa: BLE001 - the app's failure: its frames only, exit 1 as Python does
            _report_app_error(exc)
            code = 1
        sys.exit(code)
    finally:
        child.leaving()  # a CLI worker whose app returned (or failed) exits now
