"""``pycluster run``: load the settings, bind, start the arbiter, exit with
the documented status (0 graceful stop, 1 runtime error, 2 usage/config
error, 3 the first generation never became ready)."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import EXIT_RUNTIME, EXIT_USAGE
from ..master import config


def _err(message: str) -> None:
    from ..master.ops.daemon import report
    text = f"pycluster: {message}\n"
    if not report(1, text):  # a waiting `run -d` prints it
        sys.stderr.write(text)
        sys.stderr.flush()


def run_master(target: str | None, config_file: str | None, flags: dict[str, Any]) -> int:
    flags = dict(flags)
    flags["app"] = target
    try:
        cfg = config.load(flags, config_path=config_file)
    except config.ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    name = cfg.name or config.default_name(cfg.app)
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            source = cfg.sources.get("chdir", "--chdir")
            where = source if source.startswith(("-", "PYCLUSTER_")) else f"{source}: 'chdir'"
            _err(f"{where} {cfg.chdir}: {exc.strerror}")
            return EXIT_USAGE
    try:
        config.check_log_file(cfg)  # in chdir: a relative path is where the master will open it
    except config.ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if cfg.daemon:
        from ..master.ops.daemon import daemonize
        code = daemonize()
        if code is not None:
            return code
    from ..control.claim import check_free
    from ..control.paths import socket_path
    control = socket_path(name, cfg.control)
    try:
        check_free(control)  # a live master, another user's socket, a file that is no socket
    except OSError as exc:
        _err(str(exc))
        return EXIT_RUNTIME
    pidfile = None
    if cfg.pidfile:
        from ..master.ops.pidfile import PidFile, PidFileError
        try:
            pidfile = PidFile(cfg.pidfile)
            pidfile.acquire()
        except PidFileError as exc:
            _err(str(exc))
            return EXIT_RUNTIME
    try:
        return _run(cfg, name, control, flags, config_file)
    finally:
        if pidfile is not None:
            pidfile.release()


def _run(cfg: config.RunConfig, name: str, control: str, flags: dict, config_file: str | None) -> int:
    import pycluster

    from ..control.claim import ControlSocketInUse
    from ..errors import SettingsError
    from ..master.arbiter import Arbiter

    arbiter = Arbiter(cfg, name, control, version=pycluster.__version__, flags=flags,
                      config_path=config_file)
    try:
        arbiter.configure_engine()
    except (SettingsError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        arbiter.bind()
    except OSError as exc:
        _err(str(exc))
        return EXIT_RUNTIME
    from ..master.ops.systemd import Notifier
    arbiter.notify = Notifier.from_environ()
    arbiter.start_workers()  # before importing asyncio: the workers boot meanwhile
    import asyncio
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(arbiter.main())
    except ControlSocketInUse as exc:
        _err(str(exc))
        code = EXIT_RUNTIME
    except OSError as exc:
        _err(str(exc))
        code = EXIT_RUNTIME
    finally:
        pycluster._engine.shutdown_loop(loop)
    if arbiter.boot_failure:
        from ..master.ops.daemon import report
        failed = arbiter.boot_failure_code
        if not report(failed, f"pycluster: {arbiter.boot_failure}\n"):
            sys.stderr.write(f"pycluster: {arbiter.boot_failure}\n")
        return failed
    return code
