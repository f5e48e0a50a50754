"""Every setting of ``pycluster run``, declared once.

Each :class:`Setting` names its TOML key, its flags, its ``PYCLUSTER_*``
environment variable, its validator, default and help. The click options,
config-file loading, ``--help`` and the man page's option list are all
generated from ``SETTINGS``. Precedence: flag > environment > file > default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad key or value; ``str()`` names the source, the key and what is allowed."""


def _positive_float(name: str, allow_zero: bool = True) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number of seconds")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number of seconds") from None
        if number != number or number < 0 or (number == 0 and not allow_zero) or number > 86400 * 365:
            raise ValueError("expected a number of seconds >= 0" if allow_zero else "expected seconds > 0")
        return number
    check.__name__ = name
    return check


def _workers(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("expected a whole number of workers (1-4096) or 'auto'")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of workers (1-4096) or 'auto'") from None
    if not 1 <= number <= 4096:
        raise ValueError("expected a number of workers (1-4096) or 'auto'")
    return number


def resolve_workers(value: int | str) -> int:
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover
            return max(1, os.cpu_count() or 1)
    return int(value)


def _binds(value: Any) -> list[str]:
    from ..core.sockets import parse_address
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected an address or a list of addresses")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected an address string, not {item!r}")
        parse_address(item)  # raises ValueError naming the address
        out.append(item)
    return out


def _policy(value: Any) -> str:
    if value not in ("rr", "none", "reuseport"):
        raise ValueError("expected one of rr, none, reuseport")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", value) or value.startswith("."):
        raise ValueError("expected 1-64 characters of letters, digits, _ . @ -")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _id_or_name(value: Any) -> str:
    """A name or a numeric id (TOML may give an integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = _string(value).strip()
    if text.lstrip("-").isdigit():
        if not 0 <= int(text) < 2**32 - 1:
            raise ValueError("expected a name or an id from 0 to 4294967294")
    return text


def _user(value: Any) -> str:
    text = _id_or_name(value)
    if not text.isdigit():
        import pwd
        try:
            pwd.getpwnam(text)
        except KeyError:
            raise ValueError("no such user on this system") from None
    return text


def _group(value: Any) -> str:
    text = _id_or_name(value)
    if not text.isdigit():
        import grp
        try:
            grp.getgrnam(text)
        except KeyError:
            raise ValueError("no such group on this system") from None
    return text


def _path(value: Any) -> str:
    return os.path.expanduser(_string(value))


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("expected true or false")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if not match:
        raise ValueError("expected a size such as 512M, 1G or 1048576")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    size = int(number * _UNITS[unit[:1]])
    if size <= 0:
        raise ValueError("expected a size above 0")
    return size


def _env_table(value: Any) -> dict[str, str]:
    if isinstance(value, (list, tuple)):  # K=V strings from --env / PYCLUSTER_ENV
        table = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep or not key:
                raise ValueError(f"expected KEY=VALUE, not {_redact(item)!r}")
            table[key] = val
        return table
    if not isinstance(value, dict):
        raise ValueError("expected a table of NAME = \"value\"")
    out = {}
    for key, val in value.items():
        if not isinstance(val, (str, int, float, bool)):
            raise ValueError(f"env value for {key!r} must be a string or number")
        out[str(key)] = str(val)
    return out


@dataclass(frozen=True)
class Setting:
    name: str                      # TOML key and attribute name
    flags: tuple[str, ...]         # click flags ("" for the positional TARGET)
    validate: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = ""
    multiple: bool = False
    is_flag: bool = False
    env_split: str | None = None   # how PYCLUSTER_<NAME> holds several values
    reload: bool = True            # re-read on reload

    @property
    def env(self) -> str:
        return "PYCLUSTER_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("app", (), _string, None, "What each worker runs: module:callable or path/to/script.py.",
            metavar="TARGET"),
    Setting("workers", ("-w", "--workers"), _workers, "auto",
            "Number of workers, or 'auto' for the CPUs this process may run on.", metavar="N|auto"),
    Setting("bind", ("-b", "--bind"), _binds, [],
            "Address the master listens on (repeatable): HOST:PORT, [V6]:PORT, :PORT, unix:/path,"
            " udp://HOST:PORT, fd://N.", metavar="ADDR", multiple=True, env_split=","),
    Setting("policy", ("--policy",), _policy, "rr",
            "How connections reach workers: rr (master accepts, round-robin), none (shared accept"
            " socket), reuseport (a SO_REUSEPORT socket per worker).", metavar="rr|none|reuseport"),
    Setting("name", ("-n", "--name"), _name, None,
            "Cluster name (control socket NAME.sock); default: the target's module or script stem.",
            metavar="NAME"),
    Setting("env", ("--env",), _env_table, {}, "Set an environment variable in workers (repeatable).",
            metavar="K=V", multiple=True, env_split=","),
    Setting("chdir", ("--chdir",), _path, None, "Change to this directory before loading the app.",
            metavar="DIR"),
    Setting("preload", ("--preload",), _bool, False,
            "Import the app once in a fork server and fork workers from it.", is_flag=True),
    Setting("graceful_timeout", ("--graceful-timeout",), _positive_float("graceful_timeout"), 30.0,
            "Seconds a stopping worker has to finish before SIGKILL.", metavar="S"),
    Setting("boot_timeout", ("--boot-timeout",), _positive_float("boot_timeout", False), 30.0,
            "Seconds a new worker has to become ready.", metavar="S"),
    Setting("timeout", ("--timeout",), _positive_float("timeout"), 0.0,
            "Heartbeat timeout in seconds: a silent worker is aborted and replaced (0: off).",
            metavar="S"),
    Setting("max_memory", ("--max-memory",), parse_size, None,
            "Replace a worker whose RSS exceeds this size (e.g. 512M).", metavar="SIZE"),
    Setting("restart_delay", ("--restart-delay",), _positive_float("restart_delay"), 0.1,
            "First delay before restarting a worker that crashed soon after start.", metavar="S"),
    Setting("max_restart_delay", ("--max-restart-delay",), _positive_float("max_restart_delay"), 30.0,
            "Cap of the exponential restart back-off.", metavar="S"),
    Setting("min_uptime", ("--min-uptime",), _positive_float("min_uptime"), 1.0,
            "A worker that ran less than this long crashed fast (backs off).", metavar="S"),
    Setting("user", ("--user",), _user, None, "Run workers as this user (name or uid).", metavar="U"),
    Setting("group", ("--group",), _group, None, "Run workers with this group (name or gid).",
            metavar="G"),
    Setting("daemon", ("--daemon", "-d"), _bool, False,
            "Detach; return once the master is ready (0) or failed (its exit code).", is_flag=True),
    Setting("pidfile", ("--pidfile",), _path, None, "Write the master's pid to this file.", metavar="F"),
    Setting("log_file", ("--log-file",), _path, None,
            "Append the master's and workers' log lines to this file (SIGUSR1 reopens it).",
            metavar="F"),
    Setting("control", ("--control",), _path, None,
            "Control socket path (default: $PYCLUSTER_RUNTIME_DIR/NAME.sock, see the man page).",
            metavar="PATH"),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass
class RunConfig:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    file: str | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


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
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if pyproject:
        data = data.get("tool", {}).get("pycluster", {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [tool.pycluster] must be a table")
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


def _redact(item: Any) -> str:
    """An env entry for an error message: its name, never its value."""
    key, sep, _value = str(item).partition("=")
    return f"{key}=..." if sep else (key[:40] + ("..." if len(key) > 40 else ""))


def load(flags: dict[str, Any], *, config_path: str | None = None, environ: dict[str, str] | None = None,
         cwd: str | None = None) -> RunConfig:
    """Merge default < file < PYCLUSTER_* environment < flags (None = not given)."""
    environ = os.environ if environ is None else environ
    cfg = RunConfig()
    for s in SETTINGS:
        cfg.values[s.name] = s.default
        cfg.sources[s.name] = "default"
    path, pyproject = find_config_file(config_path, cwd)
    if path is not None:
        cfg.file = path
        data = read_file(path, pyproject)
        source = f"{path}" + (" [tool.pycluster]" if pyproject else "")
        for key, value in data.items():
            setting = BY_NAME.get(key)
            if setting is None:
                raise _unknown_key(source, key)
            cfg.values[key] = _check(source, setting, value)
            cfg.sources[key] = source
    for s in SETTINGS:
        raw = environ.get(s.env)
        if raw is None or raw == "":
            continue
        value: Any = [v for v in raw.split(s.env_split) if v] if s.env_split else raw
        cfg.values[s.name] = _check(f"environment {s.env}", s, value)
        cfg.sources[s.name] = s.env
    for key, value in flags.items():
        if value is None or (isinstance(value, (tuple, list)) and not value):
            continue
        setting = BY_NAME.get(key)
        if setting is None:
            continue
        flag = setting.flags[-1] if setting.flags else "TARGET"
        cfg.values[key] = _check(f"option {flag}", setting, list(value) if isinstance(value, tuple) else value)
        cfg.sources[key] = flag
    if cfg.values.get("app") is None:
        raise ConfigError("no app to run: give TARGET (module:callable or script.py) or set 'app' in the config")
    return cfg


def check_log_file(cfg: RunConfig) -> None:
    """Fail (ConfigError naming the option, the path and why) when ``log_file``
    cannot be appended to: a directory, a missing directory, no permission.
    Run by ``pycluster run`` once it is in ``chdir``; a regular file is
    opened (and so created) as the master would a moment later."""
    import stat
    path = cfg.values.get("log_file")
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
