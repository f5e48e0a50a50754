"""The served-app settings a worker gets from its master (``PYCLUSTER_SERVE``, JSON).

The master declares and checks them (``master/config.py``: ``interface``,
``factory``, ``threads``, ``keep_alive``, ``access_log``, ``proxy_headers``,
``forwarded_allow_ips``, ``root_path``); a worker reads them once, and
removes the variable so the app never sees it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from ..ipc.messages import ENV_SERVE

INTERFACES = ("auto", "asgi", "wsgi", "call")


@dataclass(frozen=True)
class ServeOptions:
    interface: str = "auto"
    factory: bool = False
    threads: int = 4
    keep_alive: float = 5.0
    access_log: bool = False
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    root_path: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> ServeOptions:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def take(cls, env: MutableMapping[str, str] | None = None) -> ServeOptions:
        """Read and remove ``PYCLUSTER_SERVE`` (defaults when absent: a library-run worker)."""
        env = os.environ if env is None else env
        raw = env.pop(ENV_SERVE, "")
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls.from_settings(data)
