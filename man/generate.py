"""The generated parts of the man pages, rendered from ``config.SETTINGS``.

``man/pycluster.1`` and ``man/pycluster.toml.5`` are hand-written roff except
for blocks between marker comments::

    .\\" BEGIN GENERATED options (python man/generate.py --write)
    ...
    .\\" END GENERATED options

Each block is rendered from the code it documents: ``options`` (the
``pycluster run`` options), ``environment`` (their ``PYCLUSTER_*``
variables) and ``keys`` (the TOML keys) from :data:`pycluster.master.config.SETTINGS`;
``signals`` from the master's signal table (``arbiter._SIGNALS``).

    python man/generate.py --check man/pycluster.1 man/pycluster.toml.5
    python man/generate.py --write man/pycluster.1 man/pycluster.toml.5
    python man/generate.py --print options

``--check`` exits 1 (and prints a diff) when a block differs from what the
code generates, 2 when a file is missing or has no generated block.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout

from pycluster.master import config  # noqa: E402
from pycluster.master.config import SETTINGS, Setting  # noqa: E402

BEGIN = '.\\" BEGIN GENERATED {name} (python man/generate.py --write)'
END = '.\\" END GENERATED {name}'
_BLOCK = re.compile(r'^\.\\" BEGIN GENERATED (\w+)[^\n]*\n(.*?)^\.\\" END GENERATED \1[ \t]*$',
                    re.M | re.S)


# -- roff helpers -------------------------------------------------------------
def esc(text: str) -> str:
    """Escape plain text for roff: backslashes, option dashes, control-line starts."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w-])--(?=\w)", r"\\-\\-", text)
    text = re.sub(r"(?<![\w\\-])-(?=\w)", r"\\-", text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def opt(flag: str) -> str:
    """A flag in bold, every hyphen a roff minus (so it can be searched and copied)."""
    return "\\fB" + flag.replace("\\", "\\e").replace("-", "\\-") + "\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def flag_names(setting: Setting) -> list[str]:
    """Short flags first, then long ones."""
    return sorted(setting.flags, key=lambda f: (f.startswith("--"), f))


def long_flag(setting: Setting) -> str:
    longs = [f for f in setting.flags if f.startswith("--")]
    return longs[0] if longs else "TARGET"


# -- values -------------------------------------------------------------------
def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML spelling for {value!r}")


def default_text(setting: Setting) -> str:
    return setting.default_text()  # the same words as `pycluster run --help`


def toml_type(setting: Setting) -> str:
    """What the TOML value may be, from the setting's validator."""
    validate = setting.validate
    qualname = getattr(validate, "__qualname__", "")
    if qualname.startswith("_positive_float"):
        return "number (seconds)"
    types: dict[Callable[[Any], Any], str] = {
        config._workers: 'integer (1-4096) or "auto"',
        config._binds: "string or array of strings (addresses)",
        config._policy: '"rr", "none" or "reuseport"',
        config._name: "string (letters, digits, _ . @ -)",
        config._env_table: 'table of strings (env = { NAME = "value" })',
        config._string: "string",
        config._user: "string or integer (a user name or a uid)",
        config._group: "string or integer (a group name or a gid)",
        config._path: "string (a path; ~ is expanded)",
        config._bool: "boolean",
        config.parse_size: 'integer (bytes) or string ("512M", "1G")',
        config._interface: '"auto", "asgi", "wsgi" or "call"',
        config._log_format: '"text" or "json"',
        config._metrics_address: 'string (a TCP address, "127.0.0.1:9100")',
        config._threads: "integer (1-1024)",
        config._ip_list: 'string ("*" or comma-separated addresses and networks)',
        config._root_path: 'string (a URL path, "/api")',
    }
    try:
        return types[validate]
    except KeyError:
        raise KeyError(f"pycluster._manpage: no TOML type for setting {setting.name!r}"
                       f" (validator {qualname or validate!r}); add one to toml_type()") from None


def env_values(setting: Setting) -> str:
    if setting.is_flag:
        return " (1, true, yes, on or 0, false, no, off)"
    if setting.env_split == ",":
        return " (several values separated by commas)"
    if setting.env_split:
        return f" (several values separated by {setting.env_split})"
    return ""


# -- blocks -------------------------------------------------------------------
def render_options(settings: Iterable[Setting] = SETTINGS) -> str:
    """The OPTIONS of ``pycluster run``: TARGET, then every flag."""
    out: list[str] = []
    for s in settings:
        out.append(".TP")
        if s.flags:
            names = ", ".join(opt(f) for f in flag_names(s))
            out.append(names + (" " + italic(s.metavar) if s.metavar and not s.is_flag else ""))
        else:
            out.append(italic(s.metavar or "TARGET"))
        out.append(esc(s.help))
        extra = []
        if s.multiple and "repeatable" not in s.help.lower():
            extra.append("Repeatable.")
        if not (s.default is None and "default:" in s.help.lower()):
            extra.append(f"Default: {esc(default_text(s))}.")
        extra.append(f"Config key {bold(s.name)}; environment {bold(s.env)}.")
        out.append(" ".join(extra))
    return "\n".join(out) + "\n"


def render_environment(settings: Iterable[Setting] = SETTINGS) -> str:
    """The ``PYCLUSTER_*`` variable of every setting."""
    out: list[str] = []
    for s in settings:
        out.append(".TP")
        out.append(bold(s.env))
        what = opt(long_flag(s)) if s.flags else italic("TARGET")
        out.append(f"Same as {what}{esc(env_values(s))}.")
    return "\n".join(out) + "\n"


def render_keys(settings: Iterable[Setting] = SETTINGS) -> str:
    """Every key of pycluster.toml / [tool.pycluster]."""
    out: list[str] = []
    for s in settings:
        out.append(".TP")
        out.append(f"{bold(s.name)} = {italic(toml_type(s))}")
        out.append(esc(s.help))
        flag = opt(long_flag(s)) if s.flags else italic("TARGET")
        where = f"Command line: {flag}; environment: {bold(s.env)}."
        if s.default is None and "default:" in s.help.lower():
            out.append(where)
        else:
            default = "unset" if s.default is None else toml_literal(s.default)
            out.append(f"Default: {esc(default)}. {where}")
    return "\n".join(out) + "\n"


# What each control request a signal maps to does (arbiter._SIGNALS values).
_SIGNAL_TEXT = {
    '{"cmd": "stop"}': "Graceful stop: stop accepting, disconnect every worker (each gets SIGTERM once its"
                       " listeners are closed), SIGKILL those still running after graceful_timeout,"
                       " remove the control socket and pidfile, exit 0.",
    '{"cmd": "stop", "now": true}': "Immediate stop: SIGKILL every worker, then exit.",
    '{"cmd": "reload"}': "Rolling reload: re-read the config file, then replace the workers one at a"
                         " time, each new one ready before the old one is stopped.",
    '{"cmd": "scale", "delta": 1}': "Add one worker.",
    '{"cmd": "scale", "delta": -1}': "Remove one worker (the highest slot is stopped gracefully).",
    '{"cmd": "reopen"}': "Reopen the log file (\\-\\-log\\-file), for logrotate.",
}
_SIGNAL_EXTRA = {
    "SIGINT": " A second SIGINT while stopping stops at once (as SIGQUIT).",
}


def signal_table() -> list[tuple[str, dict]]:
    from pycluster.master.arbiter import _SIGNALS
    return [(sig.name, dict(cmd)) for sig, cmd in _SIGNALS.items()]


def render_signals(table: list[tuple[str, dict]] | None = None) -> str:
    """The master's signals, from the same table it installs its handlers from."""
    out: list[str] = []
    for name, cmd in (signal_table() if table is None else table):
        key = json.dumps(cmd, sort_keys=False)
        try:
            text = _SIGNAL_TEXT[key]
        except KeyError:
            raise KeyError(f"pycluster._manpage: no description for signal {name} -> {key};"
                           " add one to _SIGNAL_TEXT") from None
        out.append(".TP")
        out.append(bold(name))
        out.append(text + _SIGNAL_EXTRA.get(name, ""))
        out.append(f"Same as the control request {bold(json.dumps(cmd, separators=(',', ':')))}.")
    return "\n".join(out) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "options": render_options,
    "environment": render_environment,
    "keys": render_keys,
    "signals": render_signals,
}


# -- files ----------------------------------------------------------------------
def blocks_in(text: str) -> dict[str, str]:
    """name -> current body of every generated block in ``text``."""
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}


def regenerate(text: str) -> str:
    """``text`` with every generated block re-rendered."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return BEGIN.format(name=name) + "\n" + BLOCKS[name]() + END.format(name=name)
    return _BLOCK.sub(replace, text)


def check_file(path: str) -> tuple[int, str]:
    """(status, message): 0 up to date, 1 differs, 2 missing file or no block."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        return 2, f"{path}: {exc.strerror}"
    found = blocks_in(text)
    if not found:
        return 2, f"{path}: no generated block (markers {BEGIN.format(name='NAME')!r} ... {END.format(name='NAME')!r})"
    try:
        fresh = regenerate(text)
    except KeyError as exc:
        return 2, f"{path}: {exc.args[0]}"
    if fresh == text:
        return 0, f"{path}: up to date ({', '.join(found)})"
    diff = "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True),
                                        f"{path} (file)", f"{path} (generated)"))
    return 1, f"{path}: generated blocks are out of date; run python man/generate.py --write {path}\n{diff}"


def write_file(path: str) -> tuple[int, str]:
    status, message = check_file(path)
    if status != 1:
        return status, message
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(regenerate(text))
    return 0, f"{path}: regenerated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python man/generate.py", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    mode.add_argument("--write", action="store_true", help="regenerate the blocks in place")
    mode.add_argument("--print", metavar="BLOCK", choices=sorted(BLOCKS), help="print one block")
    parser.add_argument("files", nargs="*", metavar="FILE")
    args = parser.parse_args(argv)
    if args.print:
        sys.stdout.write(BLOCKS[args.print]())
        return 0
    if not args.files:
        parser.error("give the man page files to check or write")
    worst = 0
    for path in args.files:
        status, message = (check_file if args.check else write_file)(path)
        print(message, file=sys.stderr if status else sys.stdout)
        worst = max(worst, status)
    return worst


if __name__ == "__main__":
    sys.exit(main())
