"""``pycluster startup``: write a systemd unit for a given ``run`` command line.

The unit follows ``configs/pycluster.service``; its timeouts come from the
settings ``run`` would use (parsed by ``run``'s own parser in the CLI):
``TimeoutStartSec`` from ``boot_timeout`` (twice with ``--preload``: the fork
server, then the workers, each get it) and ``TimeoutStopSec`` from
``graceful_timeout``, each plus a margin, so that systemd never kills what
``run`` is still waiting for."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys

from ..config import RunConfig

START_MARGIN = 10  # seconds beyond boot_timeout: `run` exits 3 first if workers never get ready
STOP_MARGIN = 5  # seconds beyond graceful_timeout: the drain ends, then systemd's SIGKILL

TEMPLATE = """\
# Written by `pycluster startup`; edit freely.
[Unit]
Description=pycluster {name} ({target})
Documentation=man:pycluster(1)
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={cwd}
KillMode=mixed
KillSignal=SIGTERM
# boot_timeout ({boot:g} s{boot_note}) + a margin: `run` exits 3 first if workers never get ready.
TimeoutStartSec={start_timeout}
# graceful_timeout ({graceful:g} s) + a margin.
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=1
# Exit status 2 is a usage or config error: restarting will not fix it.
RestartPreventExitStatus=2
{user_lines}
[Install]
WantedBy={wanted_by}
"""


def systemd_word(arg: str) -> str:
    """One ExecStart= argument: shell-style quoting (systemd accepts it), with
    systemd's C escapes (backslash), specifiers (%) and variables ($) escaped."""
    return shlex.quote(arg).replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")


def timeouts(cfg: RunConfig) -> tuple[int, int]:
    """(TimeoutStartSec, TimeoutStopSec) for a unit running ``cfg``."""
    boot = cfg.boot_timeout * (2 if cfg.preload else 1)
    return math.ceil(boot) + START_MARGIN, math.ceil(cfg.graceful_timeout) + STOP_MARGIN


def render(run_args: list[str], cfg: RunConfig, *, user_unit: bool, name: str) -> str:
    exe = shutil.which("pycluster")
    command = [os.path.abspath(exe)] if exe else [sys.executable, "-m", "pycluster.cli"]
    exec_start = " ".join(systemd_word(a) for a in [*command, "run", *run_args])
    user_lines = ""
    if not user_unit and os.geteuid() != 0:
        import pwd
        user_lines = f"User={pwd.getpwuid(os.geteuid()).pw_name}\n"
    start_timeout, stop_timeout = timeouts(cfg)
    return TEMPLATE.format(name=name, target=(cfg.app or "").replace("%", "%%"), exec_start=exec_start,
                           cwd=os.getcwd().replace("%", "%%"), boot=cfg.boot_timeout,
                           boot_note=", twice with --preload" if cfg.preload else "",
                           start_timeout=start_timeout, graceful=cfg.graceful_timeout,
                           stop_timeout=stop_timeout, user_lines=user_lines,
                           wanted_by="default.target" if user_unit else "multi-user.target")


def default_path(name: str, user_unit: bool) -> str:
    if user_unit:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return os.path.join(base, "systemd", "user", f"pycluster-{name}.service")
    return f"/etc/systemd/system/pycluster-{name}.service"
