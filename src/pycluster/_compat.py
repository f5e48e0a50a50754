"""Version shims: the one place that imports tomllib / tomli."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):  # pragma: no cover - depends on interpreter
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["tomllib"]
