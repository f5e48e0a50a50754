"""The validators of ``pycluster run``'s settings (``config.SETTINGS``).

Each takes a value from a flag, the environment or the config file and
returns it checked and normalised, or raises ``ValueError("expected ...")``;
``config`` turns that into a ``ConfigError`` naming the source and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any


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


def _binds(value: Any) -> tuple[str, ...]:
    from ..core.sockets import parse_address
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected an address or a list of addresses")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected an address string, not {item!r}")
        parse_address(item)  # raises ValueError naming the address
        out.append(item)
    return tuple(out)


def _policy(value: Any) -> str:
    if value not in ("rr", "none", "reuseport"):
        raise ValueError("expected one of rr, none, reuseport")
    return str(value)


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
        table: dict[str, str] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep or not key:
                raise ValueError(f"expected KEY=VALUE, not {_redact(item)!r}")
            table[key] = val
        return table
    if not isinstance(value, dict):
        raise ValueError("expected a table of NAME = \"value\"")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(val, (str, int, float, bool)):
            raise ValueError(f"env value for {key!r} must be a string or number")
        out[str(key)] = str(val)
    return out


def _redact(item: Any) -> str:
    """An env entry for an error message: its name, never its value."""
    key, sep, _value = str(item).partition("=")
    return f"{key}=..." if sep else (key[:40] + ("..." if len(key) > 40 else ""))


def _metrics_address(value: Any) -> str | None:
    """--metrics: one TCP HOST:PORT ([V6]:PORT, :PORT) the master serves HTTP on."""
    from ..core.sockets import parse_address
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a TCP address HOST:PORT")
    spec = parse_address(value)  # raises ValueError naming the address
    if spec.kind != "tcp":
        raise ValueError(f"bad address {value!r}: expected a TCP address HOST:PORT")
    return value.strip()


def _interface(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in ("auto", "asgi", "wsgi", "call"):
        raise ValueError("expected auto, asgi, wsgi or call")
    return str(text)


def _log_format(value: Any) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in ("text", "json"):
        raise ValueError("expected text or json")
    return str(text)


def _threads(value: Any) -> int:
    if isinstance(value, (bool, float)):
        raise ValueError("expected a whole number of threads (1-1024)")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of threads (1-1024)") from None
    if not 1 <= number <= 1024:
        raise ValueError("expected a number of threads (1-1024)")
    return number


def _ip_list(value: Any) -> str:
    """forwarded_allow_ips: '*' or comma-separated addresses and networks."""
    import ipaddress
    text = ",".join(value) if isinstance(value, list) else value
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected '*' or comma-separated IP addresses or networks")
    for item in (part.strip() for part in text.split(",")):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected '*' or IP addresses or networks, not {item!r}") from None
    return text.strip()


def _root_path(value: Any) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise ValueError("expected a URL path starting with '/' (or empty)")
    return value.rstrip("/") if value != "/" else ""
