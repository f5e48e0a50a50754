"""Every setting of ``pycluster run``, declared once.

Each :class:`Setting` names its TOML key, its flags, its ``PYCLUSTER_*``
environment variable, its validator, default, help, and how a reload applies
a changed value (:class:`Reload`). The click options, config-file loading,
``--help``, the man page's option list and what a reload does with each key
(:func:`plan_reload`) are all generated from ``SETTINGS``. Precedence:
flag > environment > file > default. The env-only tuning knobs are declared
the same way in ``core.tuning`` (the primary reads them) and checked here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..core import tuning
from ..core.settings import Reload, Setting
from ..errors import SettingsError
from ._validate import (
    _binds,
    _bool,
    _env_table,
    _group,
    _interface,
    _ip_list,
    _log_format,
    _metrics_address,
    _name,
    _path,
    _policy,
    _positive_float,
    _root_path,
    _string,
    _threads,
    _user,
    _workers,
    parse_size,
)

__all__ = ["BY_NAME", "SETTINGS", "TUNING", "ConfigError", "Reload", "ReloadPlan", "RunConfig", "Setting",
           "check_log_file", "default_name", "find_config_file", "load", "parse_size", "plan_reload",
           "read_file", "resolve_workers", "uid_gid"]

TUNING = tuning.TUNING  # the env-only knobs: PYCLUSTER_RR_WINDOW, ... (no flag, no TOML key)
LIVE, NEXT, RESTART = Reload.LIVE, Reload.NEXT_GENERATION, Reload.RESTART


class ConfigError(ValueError):
    """A bad key or value; ``str()`` names the source, the key and what is allowed."""


def resolve_workers(value: int | str) -> int:
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover
            return max(1, os.cpu_count() or 1)
    return int(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("app", (), _string, None, "What each worker runs: module:callable or path/to/script.py.",
            metavar="TARGET", on_reload=RESTART),
    Setting("workers", ("-w", "--workers"), _workers, "auto",
            "Number of workers, or 'auto' for the CPUs this process may run on.", metavar="N|auto", on_reload=NEXT),
    Setting("bind", ("-b", "--bind"), _binds, (),
            "Address the master listens on (repeatable): HOST:PORT, [V6]:PORT, :PORT, unix:/path,"
            " udp://HOST:PORT, fd://N.", metavar="ADDR", multiple=True, env_split=",", on_reload=RESTART),
    Setting("policy", ("--policy",), _policy, "rr",
            "How connections reach workers: rr (master accepts, round-robin), none (shared accept"
            " socket), reuseport (a SO_REUSEPORT socket per worker).", metavar="rr|none|reuseport",
            on_reload=RESTART),
    Setting("name", ("-n", "--name"), _name, None,
            "Cluster name (control socket NAME.sock); default: the target's module or script stem.",
            metavar="NAME", on_reload=RESTART),
    Setting("env", ("--env",), _env_table, {}, "Set an environment variable in workers (repeatable).",
            metavar="K=V", multiple=True, env_split=",", on_reload=LIVE),
    Setting("chdir", ("--chdir",), _path, None, "Change to this directory before loading the app.",
            metavar="DIR", on_reload=NEXT),
    Setting("preload", ("--preload",), _bool, False,
            "Import the app once in a fork server and fork workers from it.", is_flag=True, on_reload=RESTART),
    # -- served apps (SPEC 8): ASGI with uvicorn, WSGI with cheroot ------------------
    Setting("interface", ("--interface",), _interface, "auto",
            "What the target is: auto (detect), asgi (serve with uvicorn), wsgi (serve with cheroot's"
            " threads) or call (call it; it runs its own server).", metavar="auto|asgi|wsgi|call",
            on_reload=NEXT),
    Setting("factory", ("--factory",), _bool, False,
            "The target is a callable that returns the app (called once per worker; once under --preload).",
            is_flag=True, on_reload=NEXT),
    Setting("threads", ("--threads",), _threads, 4,
            "Threads per worker serving a WSGI app.", metavar="N", on_reload=NEXT),
    Setting("keep_alive", ("--keep-alive",), _positive_float("keep_alive", False), 5.0,
            "Seconds a served app keeps an idle keep-alive connection open.", metavar="S", on_reload=NEXT),
    Setting("access_log", ("--access-log",), _bool, False,
            "Served apps log one line per request: client, request, status, duration.", is_flag=True,
            on_reload=NEXT),
    Setting("proxy_headers", ("--proxy-headers",), _bool, False,
            "Served apps trust X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips.",
            is_flag=True, on_reload=NEXT),
    Setting("forwarded_allow_ips", ("--forwarded-allow-ips",), _ip_list, "127.0.0.1",
            "Peers whose proxy headers are trusted: '*' or comma-separated addresses and networks.",
            metavar="IPS", on_reload=NEXT),
    Setting("root_path", ("--root-path",), _root_path, "",
            "The URL prefix a served app is mounted under behind a proxy (ASGI root_path, WSGI SCRIPT_NAME).",
            metavar="PATH", on_reload=NEXT),
    Setting("graceful_timeout", ("--graceful-timeout",), _positive_float("graceful_timeout"), 30.0,
            "Seconds a stopping worker has to finish before SIGKILL.", metavar="S", on_reload=LIVE),
    Setting("boot_timeout", ("--boot-timeout",), _positive_float("boot_timeout", False), 30.0,
            "Seconds a new worker has to become ready.", metavar="S", on_reload=LIVE),
    Setting("reload_batch", ("--reload-batch",), _workers, "auto",
            "New workers a reload boots at once, each replacing an old one as soon as it is ready;"
            " 'auto': the whole generation under --preload, else the CPUs this process may run on.",
            metavar="N|auto", on_reload=LIVE),
    Setting("timeout", ("--timeout",), _positive_float("timeout"), 0.0,
            "Heartbeat timeout in seconds: a silent worker is aborted and replaced (0: off).",
            metavar="S", on_reload=LIVE),
    Setting("max_memory", ("--max-memory",), parse_size, None,
            "Replace a worker whose RSS exceeds this size (e.g. 512M).", metavar="SIZE", on_reload=LIVE),
    Setting("restart_delay", ("--restart-delay",), _positive_float("restart_delay"), 0.1,
            "First delay before restarting a worker that crashed soon after start.", metavar="S", on_reload=LIVE),
    Setting("max_restart_delay", ("--max-restart-delay",), _positive_float("max_restart_delay"), 30.0,
            "Cap of the exponential restart back-off.", metavar="S", on_reload=LIVE),
    Setting("min_uptime", ("--min-uptime",), _positive_float("min_uptime"), 1.0,
            "A worker that ran less than this long crashed fast (backs off).", metavar="S", on_reload=LIVE),
    Setting("user", ("--user",), _user, None, "Run workers as this user (name or uid).", metavar="U", on_reload=NEXT),
    Setting("group", ("--group",), _group, None, "Run workers with this group (name or gid).",
            metavar="G", on_reload=NEXT),
    Setting("daemon", ("--daemon", "-d"), _bool, False,
            "Detach; return once the master is ready (0) or failed (its exit code).", is_flag=True,
            on_reload=RESTART),
    Setting("pidfile", ("--pidfile",), _path, None, "Write the master's pid to this file.", metavar="F",
            on_reload=RESTART),
    Setting("log_file", ("--log-file",), _path, None,
            "Append the master's and workers' log lines to this file (SIGUSR1 reopens it).",
            metavar="F", on_reload=RESTART),
    Setting("log_format", ("--log-format",), _log_format, "text",
            "Log lines as text (a timestamp, [worker N] or [pycluster], the line) or json (one object per"
            " line: time, source, worker, pid, stream, line), on the terminal and in --log-file.",
            metavar="text|json", on_reload=RESTART),
    Setting("metrics", ("--metrics",), _metrics_address, None,
            "Serve HTTP on this TCP address: /metrics (Prometheus text: the cluster's and the apps'"
            " prometheus_client metrics, merged), /healthz (the master runs), /readyz (every wanted"
            " worker is ready).", metavar="ADDR", on_reload=RESTART),
    Setting("control", ("--control",), _path, None,
            "Control socket path (default: $PYCLUSTER_RUNTIME_DIR/NAME.sock, see the man page).",
            metavar="PATH", on_reload=RESTART),
)


BY_NAME = {s.name: s for s in SETTINGS}


def _no_sources() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RunConfig:
    """The checked settings of one ``pycluster run``: one attribute per entry of
    ``SETTINGS`` (checked at import), and where each value came from. Frozen: a
    reload builds a new one (:func:`plan_reload`) and the master swaps it in."""

    app: str
    workers: int | str  # a number, or "auto" (resolve_workers)
    bind: tuple[str, ...]
    policy: str
    name: str | None
    env: Mapping[str, str]
    chdir: str | None
    preload: bool
    interface: str
    factory: bool
    threads: int
    keep_alive: float
    access_log: bool
    proxy_headers: bool
    forwarded_allow_ips: str
    root_path: str
    graceful_timeout: float
    boot_timeout: float
    reload_batch: int | str  # a number, or "auto" (reload.batch_size)
    timeout: float
    max_memory: int | None
    restart_delay: float
    max_restart_delay: float
    min_uptime: float
    user: str | None
    group: str | None
    daemon: bool
    pidfile: str | None
    log_file: str | None
    log_format: str
    metrics: str | None
    control: str | None
    sources: Mapping[str, str] = field(default_factory=_no_sources, compare=False)  # key -> flag, variable, file
    file: str | None = field(default=None, compare=False)

    @classmethod
    def build(cls, values: Mapping[str, Any], sources: Mapping[str, str] | None = None,
              file: str | None = None) -> RunConfig:
        """From checked values, one per setting (defaults for the missing ones)."""
        unknown = set(values) - set(BY_NAME)
        if unknown:
            raise TypeError(f"not settings of pycluster run: {', '.join(sorted(unknown))}")
        merged = {s.name: values.get(s.name, s.default) for s in SETTINGS}
        merged["env"] = MappingProxyType(dict(merged["env"]))
        merged["bind"] = tuple(merged["bind"])
        return cls(**merged, sources=MappingProxyType(dict(sources or {})), file=file)

    def get(self, name: str) -> Any:
        """A setting's value by name (the table's way in)."""
        if name not in BY_NAME:
            raise AttributeError(name)
        return getattr(self, name)

    @property
    def values(self) -> dict[str, Any]:
        """Every setting's value, by name (a copy)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def replace(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> RunConfig:
        return dataclasses.replace(self, **values, sources=MappingProxyType({**self.sources, **sources}))


_FIELDS = [f.name for f in dataclasses.fields(RunConfig)][:-2]
if _FIELDS != [s.name for s in SETTINGS]:  # pragma: no cover - a declaration out of step
    raise ImportError(f"RunConfig's attributes {_FIELDS} are not SETTINGS {[s.name for s in SETTINGS]}")


def find_config_file(explicit: str | None, cwd: str | None = None) -> tuple[str | None, bool]:
    """(path, is_pyproject). -c FILE, else ./pycluster.toml, else ./pyproject.toml."""
    if explicit:
        return explicit, os.path.basename(explicit) == "pyproject.toml"
    base = cwd or os.getcwd()
    for name, pyproject in (("pycluster.toml", False), ("pyproject.toml", True)):
        path = os.path.join(base, name)
        if os.path.isfile(path):
            return path, pyproject
    return None, False


def read_file(path: str, pyproject: bool = False) -> dict[str, Any]:
    from .._compat import tomllib
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if pyproject:
        table = data.get("tool", {}).get("pycluster", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.pycluster] must be a table")
        return table
    return data


def _unknown_key(source: str, key: str) -> ConfigError:
    import difflib
    near = difflib.get_close_matches(key, list(BY_NAME), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(f"{source}: unknown key {key!r}{hint}; allowed keys: {', '.join(BY_NAME)}")


def _check(source: str, setting: Setting, value: Any) -> Any:
    try:
        return setting.validate(value)
    except ValueError as exc:
        shown = "" if setting.name == "env" else f" {value!r}:"  # env values may be secrets
        raise ConfigError(f"{source}: bad value for {setting.name!r}:{shown} {exc}") from None


def load(flags: Mapping[str, Any], *, config_path: str | None = None, environ: Mapping[str, str] | None = None,
         cwd: str | None = None) -> RunConfig:
    """Merge default < file < PYCLUSTER_* environment < flags (None = not given);
    the env-only tuning knobs are checked too (a bad one names its variable)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {s.name: "default" for s in SETTINGS}
    path, pyproject = find_config_file(config_path, cwd)
    if path is not None:
        data = read_file(path, pyproject)
        source = f"{path}" + (" [tool.pycluster]" if pyproject else "")
        for key, value in data.items():
            setting = BY_NAME.get(key)
            if setting is None:
                raise _unknown_key(source, key)
            values[key] = _check(source, setting, value)
            sources[key] = source
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None or raw == "":
            continue
        given: Any = [v for v in raw.split(s.env_split) if v] if s.env_split else raw
        values[s.name] = _check(f"environment {s.env}", s, given)
        sources[s.name] = s.env
    for key, flag_value in flags.items():
        if flag_value is None or (isinstance(flag_value, (tuple, list)) and not flag_value):
            continue
        setting = BY_NAME.get(key)
        if setting is None:
            continue
        flag = setting.flags[-1] if setting.flags else "TARGET"
        values[key] = _check(f"option {flag}", setting,
                             list(flag_value) if isinstance(flag_value, tuple) else flag_value)
        sources[key] = flag
    if values.get("app") is None:
        raise ConfigError("no app to run: give TARGET (module:callable or script.py) or set 'app' in the config")
    try:
        tuning.check(env)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    return RunConfig.build(values, sources, path)


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does with a freshly read config, from the table."""

    config: RunConfig  # the running config with every live and next-generation value of the fresh one
    changed: Mapping[Reload, tuple[str, ...]]  # the keys whose value changed, by how a reload applies them
    notes: tuple[str, ...]  # one per changed restart-only key: it is kept, and the note says so


def plan_reload(running: RunConfig, fresh: RunConfig) -> ReloadPlan:
    changed = {how: tuple(s.name for s in SETTINGS if s.on_reload is how and running.get(s.name) != fresh.get(s.name))
               for how in Reload}
    applied = changed[LIVE] + changed[NEXT]
    config = running.replace({name: fresh.get(name) for name in applied},
                             {name: fresh.sources.get(name, "default") for name in applied})
    notes = tuple(f"{name} changed in the config: it takes effect when the master restarts"
                  for name in changed[RESTART])
    return ReloadPlan(config, MappingProxyType(changed), notes)


def uid_gid(cfg: RunConfig) -> tuple[int | str | None, int | str | None]:
    """The workers' user and group as ``setup_primary`` takes them (an id as an int)."""
    def norm(value: str | None) -> int | str | None:
        return int(value) if value is not None and value.isdigit() else value
    return norm(cfg.user), norm(cfg.group)


def check_log_file(cfg: RunConfig) -> None:
    """Fail (ConfigError naming the option, the path and why) when ``log_file``
    cannot be appended to: a directory, a missing directory, no permission.
    Run by ``pycluster run`` once it is in ``chdir``; a regular file is
    opened (and so created) as the master would a moment later."""
    import stat
    path = cfg.log_file
    if not path:
        return
    reason = None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        st = None
        if not os.path.isdir(parent):
            reason = f"no such directory {parent}"
    except OSError as exc:
        st = None
        reason = exc.strerror or str(exc)
    if reason is None and st is not None and stat.S_ISDIR(st.st_mode):
        reason = "is a directory"
    elif reason is None and (st is None or stat.S_ISREG(st.st_mode)):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666))
        except OSError as exc:
            reason = exc.strerror or str(exc)
    elif reason is None and not os.access(path, os.W_OK):  # a FIFO or a device: not opened here
        reason = "permission denied"
    if reason is not None:
        source = cfg.sources.get("log_file", "--log-file")
        where = source if source.startswith(("-", "PYCLUSTER_")) else f"{source}: 'log_file'"
        raise ConfigError(f"{where} {path}: cannot write the log file: {reason}")


def default_name(target: str) -> str:
    """The target's module (last part) or script stem."""
    if target.endswith(".py") or os.sep in target:
        stem = os.path.splitext(os.path.basename(target))[0]
    else:
        stem = target.split(":", 1)[0].rsplit(".", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9_.@-]", "_", stem) or "app"
    return cleaned.lstrip(".") or "app"
