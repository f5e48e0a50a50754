"""uvicorn, hypercorn and aiohttp run by the app itself drain as a served app does.

The patches are :mod:`~pycluster.serve.adapters`; this module only registers
them, to run right after the app imports one of those servers, so a worker
that uses none of them pays one dictionary lookup per import and boots
without asyncio.
"""

from __future__ import annotations

from types import ModuleType

from ..child.import_hooks import after_import


def _uvicorn(module: ModuleType) -> None:
    from .adapters import patch_uvicorn
    patch_uvicorn(module)


def _hypercorn(module: ModuleType) -> None:
    from .adapters import patch_hypercorn
    patch_hypercorn(module)


def _aiohttp(module: ModuleType) -> None:
    from .adapters import patch_aiohttp
    patch_aiohttp(module)


def install() -> None:
    """Patch uvicorn, hypercorn and aiohttp when (if) the app imports them."""
    after_import("uvicorn.server", _uvicorn)
    after_import("hypercorn.asyncio", _hypercorn)
    after_import("aiohttp.web_runner", _aiohttp)
