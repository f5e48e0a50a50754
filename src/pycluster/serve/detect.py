"""What ``pycluster run module:attr`` was given, and how a worker runs it (SPEC 8).

=========================================  ===========
``attr`` is                                interface
=========================================  ===========
a callable with no required parameters     ``call``: called; it runs its own server
``async (scope, receive, send)``, or an    ``asgi``: served with uvicorn
object whose ``__call__`` is one
``(environ, start_response)``              ``wsgi``: served with cheroot
=========================================  ===========

``--factory`` calls ``attr`` first (once per worker, once in the fork server
under ``--preload``) and looks at what it returned; ``--interface`` names the
answer instead of asking. What fits none, or fits badly, is a
:class:`UsageError`: one line that says what was found and which flag to use.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

from .options import ServeOptions


class UsageError(Exception):
    """The target is no app pycluster can run as asked (one line; the worker exits WORKER_USAGE_ERROR)."""


_EXTRAS = {"asgi": ("uvicorn", "asgi", "an ASGI"), "wsgi": ("cheroot", "wsgi", "a WSGI")}


def prepare(obj: Any, target: str, options: ServeOptions) -> tuple[str, Callable[[], Any]]:
    """(interface, what the worker calls to run the app), or :class:`UsageError`."""
    if options.factory:
        if not callable(obj):
            raise UsageError(f"{target!r} is {describe(obj)}, not a factory: --factory needs a callable"
                             " that returns the app")
        obj = obj()
        if inspect.isawaitable(obj):
            close = getattr(obj, "close", None)
            if close is not None:
                close()
            raise UsageError(f"the factory {target!r} is a coroutine function: --factory needs a plain"
                             " callable that returns the app")
        target = f"{target}()"
    interface = options.interface if options.interface != "auto" else detect(obj, target)
    if not callable(obj):
        raise UsageError(f"{target!r} is {describe(obj)}, not callable: pycluster runs a callable,"
                         " an ASGI app or a WSGI app")
    if interface == "call":
        return interface, obj
    module, extra, what = _EXTRAS[interface]
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"serving {what} app ({target!r}) needs {module}, which is not installed:"
                         f" pip install 'pycluster[{extra}]'")
    if interface == "asgi":
        from . import asgi

        def run_asgi() -> int:
            return asgi.serve(obj, options)
        return interface, run_asgi

    from . import wsgi

    def run_wsgi() -> int:
        return wsgi.serve(obj, options)
    return interface, run_wsgi


def detect(obj: Any, target: str) -> str:
    """``call``, ``asgi`` or ``wsgi`` for ``obj``, or :class:`UsageError`."""
    if not callable(obj):
        raise UsageError(f"{target!r} is {describe(obj)}, not callable: pycluster runs a callable,"
                         " an ASGI app or a WSGI app")
    hint = _known(obj)
    if hint:
        raise UsageError(f"{target!r} is {describe(obj)}: {hint}")
    if inspect.isclass(obj):
        raise UsageError(f"{target!r} is a class ({_qualname(obj)}): name an instance of it, or add --factory"
                         " if calling it returns the app")
    shape = _shape(obj)
    if shape is None:
        raise UsageError(f"{target!r} is {describe(obj)} whose parameters cannot be read: say what it is"
                         " with --interface asgi, wsgi or call")
    is_async, required, variadic = shape
    if required == 0 and not variadic:
        return "call"
    if required == 3 and not variadic:
        return "asgi"
    if required == 2 and not variadic and not is_async:
        return "wsgi"
    params = ", ".join(_param_names(obj)) or "..."
    kind = "a coroutine function" if is_async else "a callable"
    raise UsageError(f"{target!r} is {kind} taking ({params}): not an ASGI app (scope, receive, send), a WSGI app"
                     " (environ, start_response) nor a callable without arguments; if it is one of them, say so"
                     " with --interface asgi, wsgi or call")


def describe(obj: Any) -> str:
    """'a Flask (flask.app.Flask)', 'a function', 'an int' - for one-line messages."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return "a coroutine function" if inspect.iscoroutinefunction(obj) else "a function"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    if inspect.isclass(obj):
        return f"the class {_qualname(obj)}"
    cls = type(obj)
    article = "an" if cls.__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {cls.__name__} ({_qualname(cls)})"


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _known(obj: Any) -> str:
    """A hint for well-known app objects that are neither ASGI nor WSGI."""
    name = _qualname(type(obj))
    if name.startswith("aiohttp.") and type(obj).__name__ == "Application":
        return ("an aiohttp Application is no ASGI or WSGI app: run it from a main() that calls"
                " web.run_app(app, host=..., port=...) and name that (module:main)")
    if name.startswith("tornado.") and type(obj).__name__ == "Application":
        return ("a tornado Application is no ASGI or WSGI app: run it from a main() that calls"
                " app.listen(port) and starts the IOLoop, and name that (module:main)")
    return ""


def _shape(obj: Any) -> tuple[bool, int, bool] | None:
    """(is a coroutine function, required positional parameters, takes *args)."""
    call = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj).__call__
    is_async = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(obj)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in sig.parameters.values() if p.kind in positional and p.default is p.empty)
    variadic = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())
    return is_async, required, variadic


def _param_names(obj: Any) -> list[str]:
    try:
        return [str(p) for p in inspect.signature(obj).parameters.values()]
    except (TypeError, ValueError):
        return []
