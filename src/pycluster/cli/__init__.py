"""``pycluster``: the command line (click is imported here and nowhere else)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from .. import __version__
from ..control import client
from ..control.commands import logs, reload, scale, status, stop
from ..core.common import plural
from ..errors import EXIT_NO_MASTER, EXIT_USAGE, ControlError
from ..master.config import SETTINGS, RunConfig, Setting


def _words(words: tuple[str, ...]):
    """Shell completion of an option's values (click calls it with what is typed so far)."""
    def complete(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
        return [word for word in words if word.startswith(incomplete)]
    return complete


def _master_names(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of ``-n``: the masters running for this user."""
    return [name for name in client.live_names() if name.startswith(incomplete)]


def _option(setting: Setting):
    # default stays None (an option not given must not override the file or the
    # environment), so --help gets the real default in the help text, in the
    # man page's words (click's show_default would print "(30)").
    kwargs: dict[str, Any] = {"help": setting.help, "default": None, "show_envvar": False}
    shown = setting.default_text()
    if shown not in ("unset", "", "off") and "default:" not in setting.help.lower():
        kwargs["help"] = f"{setting.help}  [default: {shown}]"
    if setting.choices:
        kwargs["shell_complete"] = _words(setting.choices)
    if setting.is_flag:
        kwargs["is_flag"] = True
    else:
        kwargs["metavar"] = setting.metavar or None
    if setting.multiple:
        kwargs["multiple"] = True
    return click.option(*setting.flags, setting.name, **kwargs)


def run_options(fn):
    for setting in reversed([s for s in SETTINGS if s.flags]):
        fn = _option(setting)(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pycluster")
def main() -> None:
    """Run a Python server on every core: a master that forks workers sharing
    ports, restarts them, reloads them without dropping requests, and answers
    status / reload / stop / scale over a control socket."""


@main.command("run", context_settings={"ignore_unknown_options": False})
@click.argument("target", required=False)
@click.option("-c", "--config", "config_file", metavar="FILE",
              help="Config file (default ./pycluster.toml, else [tool.pycluster] in ./pyproject.toml).")
@run_options
def run_cmd(target: str | None, config_file: str | None, **flags) -> None:
    """Start a master running TARGET (module:callable or path/to/script.py) in each worker."""
    from .run import run_master
    sys.exit(run_master(target, config_file, flags))


def _control_options(fn):
    fn = click.option("--control", metavar="PATH", default=None, help="Control socket path.")(fn)
    fn = click.option("-n", "--name", metavar="NAME", default=None, shell_complete=_master_names,
                      help="The master to talk to (default: the only one running).")(fn)
    return fn


def _echo(message: str, *, err: bool = False) -> None:
    click.echo(message, err=err)


def _failed(exc: ControlError) -> NoReturn:
    """Libraries raise, the CLI exits: one line on stderr and the verb's exit status."""
    click.echo(f"pycluster: {exc}", err=True)
    sys.exit(exc.exit_code)


@main.command("status", help=status.HELP)
@_control_options
@click.option("--json", "as_json", is_flag=True,
              help="Print the status as one JSON object (the README's control protocol section).")
@click.option("--watch", is_flag=True, help="Live view (same as `pycluster top`).")
@click.option("--check", "health", is_flag=True,
              help="Health check: exit 0 when every wanted worker is ready, else 1 (3: no master); one line.")
def status_cmd(name, control, as_json, watch, health) -> None:
    try:
        path = client.find(name, control)
        if watch:
            sys.exit(_top(path))
        result = status.fetch(path)
    except ControlError as exc:
        _failed(exc)
    if health:
        code, line = status.check(result)
        click.echo(line if code == 0 else f"pycluster: {line}", err=code != 0)
        sys.exit(code)
    if as_json:
        status.print_json(result, _echo)
        return
    from ..tui import print_status
    print_status(result)


def _top(path: str) -> int:
    """The live view on a terminal; off one (a pipe, a file, cron), one status snapshot."""
    if not sys.stdout.isatty():
        from ..tui import print_status
        print_status(status.fetch(path))
        return 0
    from ..tui import watch as live
    return live(path)


@main.command("top")
@_control_options
def top_cmd(name, control) -> None:
    """Live view of the cluster (status --watch); with stdout not a terminal, one status table and exit."""
    try:
        sys.exit(_top(client.find(name, control)))
    except ControlError as exc:
        _failed(exc)


@main.command("stop", help=stop.HELP)
@_control_options
@click.option("--timeout", type=float, default=None, metavar="S",
              help="Wait at most S seconds for the master to exit (default: until it does).")
def stop_cmd(name, control, timeout) -> None:
    try:
        stop.client(client.find(name, control), _echo, timeout=timeout)
    except ControlError as exc:
        _failed(exc)


@main.command("scale", help=scale.HELP, context_settings={"ignore_unknown_options": True})
@_control_options
@click.argument("count", metavar="N|+N|-N")
def scale_cmd(name, control, count: str) -> None:
    try:
        request = scale.request(count)  # a bad N is a usage error even with no master running
        click.echo(scale.render(client.call(client.find(name, control), request)))
    except ControlError as exc:
        _failed(exc)


@main.command("reload", help=reload.HELP)
@_control_options
@click.option("--wait/--no-wait", default=True, help="Wait until the new generation is complete.")
def reload_cmd(name, control, wait) -> None:
    try:
        path = client.find(name, control)
        if not wait:
            reload.start(path, _echo)
            return
    except ControlError as exc:
        _failed(exc)
    from .reload_view import follow_reload
    sys.exit(follow_reload(path))


@main.command("logs", help=logs.HELP)
@_control_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", type=click.IntRange(0, logs.MAX_LINES), default=100, show_default=True)
def logs_cmd(name, control, follow, lines) -> None:
    try:
        logs.client(client.find(name, control), _echo, lines=lines, follow=follow)
    except ControlError as exc:
        if exc.exit_code == EXIT_NO_MASTER and name and name.isdigit() and control is None:
            # `logs -n 5`, the tail habit: -n names the master in every verb.
            click.echo(f"pycluster: no master named {name!r} (-n is the master's name); "
                       f"for the last {name} lines: pycluster logs --lines {name}", err=True)
            sys.exit(EXIT_USAGE)
        _failed(exc)


@main.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json) -> None:
    """List the masters running for this user."""
    from ..control import paths
    from ..control.client import NoMaster, UntrustedSocket, request
    rows: list[dict[str, Any]] = []
    for path in paths.candidates():
        try:
            reply = request(path, status.request(), timeout=2.0)
        except UntrustedSocket as exc:
            click.echo(f"pycluster: {exc}", err=True)
            continue
        except (NoMaster, OSError, ValueError):
            continue
        res = reply.get("result") or {}
        rows.append({"name": res.get("name"), "pid": res.get("pid"), "state": res.get("state"),
                     "workers": len(res.get("workers", [])), "target": res.get("target"), "control": path})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no pycluster master is running")
        return
    for row in rows:
        workers = plural(row["workers"], "worker")
        click.echo(f"{row['name']}\tpid {row['pid']}\t{row['state']}\t{workers}\t{row['target']}")


@main.command("startup", context_settings={"ignore_unknown_options": True})
@click.option("--user", "user_unit", is_flag=True, help="Write a user unit (systemctl --user).")
@click.option("-o", "--output", metavar="FILE", default=None,
              help="Where to write the unit ('-' for stdout; default: the systemd unit directory).")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, required=True)
def startup_cmd(user_unit, output, run_args) -> None:
    """Write a systemd unit (Type=notify) that runs `pycluster run RUN-ARGS...`."""
    from ..master import config
    from ..master.ops.startup import default_path, render
    args = list(run_args)
    try:
        cfg = _run_config(args)
        name = cfg.name or config.default_name(cfg.app)
    except click.UsageError as exc:
        click.echo(f"pycluster: startup: the run arguments: {exc.format_message()}", err=True)
        sys.exit(2)
    except config.ConfigError as exc:
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(2)
    text = render(args, cfg, user_unit=user_unit, name=name)
    if output == "-":
        click.echo(text, nl=False)
        return
    path = output or default_path(name, user_unit)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    click.echo(f"wrote {path}; enable it with: systemctl {'--user ' if user_unit else ''}enable --now "
               f"{os.path.basename(path)}")


def _run_config(args: list[str]) -> RunConfig:
    """The settings ``pycluster run ARGS`` would run with, read by the run
    command's own parser (a target after options, -c FILE, -n NAME...); the
    environment is left out: the unit runs under systemd's. UsageError when
    ``run`` would refuse the arguments, ConfigError for a bad value."""
    from ..master import config
    ctx = run_cmd.make_context("pycluster run", list(args))
    flags = {key: value for key, value in ctx.params.items() if key not in ("target", "config_file")}
    flags["app"] = ctx.params.get("target")
    return config.load(flags, config_path=ctx.params.get("config_file"), environ={})


if __name__ == "__main__":  # pragma: no cover
    main()
