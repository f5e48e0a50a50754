"""``pycluster``: the command line (click is imported here and nowhere else)."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import __version__
from ..master.config import SETTINGS, RunConfig, Setting

EXIT_NO_MASTER = 3
REQUEST_TIMEOUT = 10.0  # seconds a verb waits for the master's reply (then: exit 3, no master answers)
STATUS_TIMEOUT = 5.0  # status answers in milliseconds; a master silent this long is stopped or hung


def _option(setting: Setting):
    kwargs = {"help": setting.help, "default": None, "show_envvar": False}
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
    fn = click.option("-n", "--name", metavar="NAME", default=None,
                      help="The master to talk to (default: the only one running).")(fn)
    return fn


def _path_or_exit(name: str | None, control: str | None, missing_code: int = EXIT_NO_MASTER) -> str:
    from ..control.client import Ambiguous, NoMaster, resolve
    try:
        return resolve(name, control)
    except NoMaster as exc:
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(missing_code)
    except Ambiguous as exc:
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(2)


def _call(path: str, request: dict, timeout: float = REQUEST_TIMEOUT) -> dict:
    from ..control.client import NoMaster, UntrustedSocket
    from ..control.client import request as send
    try:
        reply = send(path, request, timeout=timeout)
    except NoMaster as exc:  # nothing listens, or the master did not answer within `timeout`
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(EXIT_NO_MASTER)
    except UntrustedSocket as exc:
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"pycluster: cannot reach the master on {path}: {exc}", err=True)
        sys.exit(1)
    if not reply.get("ok"):
        err = reply.get("error") or {}
        click.echo(f"pycluster: {err.get('message', 'request failed')} ({err.get('code', '?')})", err=True)
        sys.exit(1)
    return reply.get("result")


@main.command("status")
@_control_options
@click.option("--json", "as_json", is_flag=True, help="Print the status JSON (SPEC section 5).")
@click.option("--watch", is_flag=True, help="Live view (same as `pycluster top`).")
def status_cmd(name, control, as_json, watch) -> None:
    """Show the master and its workers; exit 3 when no master answers."""
    path = _path_or_exit(name, control)
    if watch:
        from ..tui import watch as live
        sys.exit(live(path))
    result = _call(path, {"cmd": "status"}, timeout=STATUS_TIMEOUT)
    if as_json:
        click.echo(json.dumps(result))
        return
    from ..tui import print_status
    print_status(result)


@main.command("top")
@_control_options
def top_cmd(name, control) -> None:
    """Live view of the cluster (status --watch)."""
    path = _path_or_exit(name, control)
    from ..tui import watch as live
    sys.exit(live(path))


@main.command("stop")
@_control_options
@click.option("--timeout", type=float, default=None, metavar="S",
              help="Wait at most S seconds for the master to exit (default: until it does).")
def stop_cmd(name, control, timeout) -> None:
    """Stop the master gracefully and wait until it has exited."""
    import time
    path = _path_or_exit(name, control)
    result = _call(path, {"cmd": "stop"})
    pid = result.get("pid")
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid and _alive(pid):
        if deadline is not None and time.monotonic() > deadline:
            click.echo(f"pycluster: master {pid} still running after {timeout:g}s", err=True)
            sys.exit(1)
        time.sleep(0.05)
    click.echo(f"stopped (master pid {pid})")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@main.command("scale", context_settings={"ignore_unknown_options": True})
@_control_options
@click.argument("count", metavar="N|+N|-N")
def scale_cmd(name, control, count: str) -> None:
    """Set the number of workers: N, or +N / -N relative to now."""
    text = count.strip()
    try:
        value = int(text)
    except ValueError:
        click.echo(f"pycluster: scale: {count!r} is not N, +N or -N", err=True)
        sys.exit(2)
    request = {"cmd": "scale", ("delta" if text[:1] in "+-" else "workers"): value}
    path = _path_or_exit(name, control)
    result = _call(path, request)
    click.echo(f"workers: {result['was']} -> {result['workers_wanted']}")


@main.command("reload")
@_control_options
@click.option("--wait/--no-wait", default=True, help="Wait until the new generation is complete.")
def reload_cmd(name, control, wait) -> None:
    """Rolling reload: replace every worker with freshly loaded code."""
    path = _path_or_exit(name, control)
    if not wait:
        result = _call(path, {"cmd": "reload", "wait": False})
        click.echo(f"reload to generation {result['generation']} started")
        for note in result.get("notes") or ():
            click.echo(f"note: {note}")
        return
    from .reload_view import follow_reload
    sys.exit(follow_reload(path))


@main.command("logs")
@_control_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--lines", type=click.IntRange(0, 100000), default=100, show_default=True)
def logs_cmd(name, control, follow, lines) -> None:
    """Print the master's recent log lines (workers' output included)."""
    from ..control.client import NoMaster, request, stream
    path = _path_or_exit(name, control)
    # Whatever comes back is printed or named in one line, never a traceback: a reply
    # may be cut, not JSON, or shaped unlike a `logs` result.
    try:
        if not follow:
            _print_logs(request(path, {"cmd": "logs", "lines": lines}))
            return
        for reply in stream(path, {"cmd": "logs", "lines": lines, "follow": True}):
            _print_logs(reply)
    except KeyboardInterrupt:
        pass
    except NoMaster as exc:
        click.echo(f"pycluster: {exc}", err=True)
        sys.exit(EXIT_NO_MASTER)
    except OSError as exc:
        click.echo(f"pycluster: cannot reach the master on {path}: {exc}", err=True)
        sys.exit(1)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a reply of the wrong shape
        click.echo(f"pycluster: logs: unreadable reply from the master on {path}: {_printable(str(exc))[:200]}",
                   err=True)
        sys.exit(1)


def _print_logs(reply: object) -> None:
    if not isinstance(reply, dict):
        raise ValueError(f"expected a JSON object, got {type(reply).__name__}")
    if not reply.get("ok"):
        err = reply.get("error")
        err = err if isinstance(err, dict) else {"message": str(err)}
        click.echo(f"pycluster: {_printable(str(err.get('message', 'request failed')))}"
                   f" ({_printable(str(err.get('code', '?')))})", err=True)
        sys.exit(1)
    result = reply.get("result")
    entries = result.get("lines") if isinstance(result, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no list of lines in the result")
    omitted = result.get("omitted")
    if isinstance(omitted, int) and omitted > 0:
        click.echo(f"pycluster: {omitted} earlier lines left out (the reply would have been too large)",
                   err=True)
    for entry in entries:
        click.echo(_fmt_log(entry))


def _fmt_log(entry: object) -> str:
    if not isinstance(entry, dict):
        return f"[?] {_printable(json.dumps(entry))}"
    worker = entry.get("worker")
    if worker is None:
        who = "pycluster"
    elif isinstance(worker, int) and not isinstance(worker, bool):
        who = f"worker {worker}"
    else:
        who = "?"
    line = entry.get("line", "")
    return f"[{who}] {_printable(line if isinstance(line, str) else json.dumps(line))}"


def _printable(text: str) -> str:
    """Control characters but line breaks shown, not obeyed (a master passes a
    worker's bytes along); a lone surrogate (valid JSON, not UTF-8) becomes '?'."""
    from ..core.common import printable
    return "\n".join(map(printable, text.split("\n"))).encode("utf-8", "replace").decode("utf-8")


@main.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json) -> None:
    """List the masters running for this user."""
    from ..control import paths
    from ..control.client import NoMaster, UntrustedSocket, request
    rows = []
    for path in paths.candidates():
        try:
            reply = request(path, {"cmd": "status"}, timeout=2.0)
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
        click.echo(f"{row['name']}\tpid {row['pid']}\t{row['state']}\t{row['workers']} workers\t{row['target']}")


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
    text = render(args, user_unit=user_unit, name=name, graceful_timeout=cfg.graceful_timeout)
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
