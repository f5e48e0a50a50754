"""Before any fork: set the engine up for ``pycluster run`` and bind its listeners.

Both fail fast, with nothing started: a missing script, ``--preload`` of a
script, an unknown user, an address already in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pycluster as cluster

from ..core.common import POLICY_BY_NAME
from ..primary.engine import Engine
from ..primary.spawn import credentials


def uid_gid(cfg: Any) -> tuple[Any, Any]:
    """``user`` and ``group`` as the engine takes them: numeric ids as ints, names as they are."""
    def norm(v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.isdigit() else v
    return norm(cfg.user), norm(cfg.group)


def configure_engine(engine: Engine, cfg: Any, handlers: Mapping[str, Callable[..., Any]]) -> None:
    """Settings, worker command and event handlers (``handlers``: event name -> handler)."""
    script = cfg.app.endswith(".py") or (os.sep in cfg.app and ":" not in cfg.app)
    if script and not os.path.isfile(cfg.app):
        raise ValueError(f"no such script: {cfg.app!r} (in {os.getcwd()})")
    if cfg.preload and script:
        raise ValueError(f"--preload needs a module:callable target (it imports the app once);"
                         f" {cfg.app!r} is a script, which can only run as __main__ in each worker")
    cluster.scheduling_policy = POLICY_BY_NAME[cfg.policy]
    # stdin from /dev/null; stdout and stderr are read line by line (logs.py).
    settings: dict[str, Any] = {"silent": True, "stdio": ["ignore", "pipe", "pipe"], "args": [],
                                "exec_argv": []}
    if cfg.metrics:  # stdio[3]: where each worker writes its app's samples (child/metrics.py)
        settings["stdio"].append("pipe")
    if cfg.chdir:
        settings["cwd"] = cfg.chdir
    uid, gid = uid_gid(cfg)
    if uid:
        settings["uid"] = uid
    if gid:
        settings["gid"] = gid
    credentials(settings.get("uid"), settings.get("gid"))  # SettingsError now, not at each fork
    cluster.setup_primary(**settings)
    engine.worker_command = ["-m", "pycluster.child.entry", cfg.app]
    for event, handler in handlers.items():
        cluster.on(event, handler)


def bind(engine: Engine, specs: Iterable[str]) -> None:
    """Bind every --bind address before any fork (fails fast, nothing started).
    Sockets passed by systemd socket activation come first."""
    from .ops.systemd import activation_fds
    for fd in activation_fds():
        engine.add_listener(f"fd://{fd}")
        os.close(fd)  # the handle holds its own duplicate
    for spec in specs:
        try:
            engine.add_listener(spec)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {spec}: {exc.strerror or exc}") from None
