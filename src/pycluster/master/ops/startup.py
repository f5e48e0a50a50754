"""``pycluster startup``: write a systemd unit for a given ``run`` command line."""

from __future__ import annotations

import os
import shlex
import shutil
import sys

TEMPLATE = """\
# Written by `pycluster startup`; edit freely.
[Unit]
Description=pycluster {name}
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={cwd}
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=1
{user_lines}
[Install]
WantedBy={wanted_by}
"""


def render(run_args: list[str], *, user_unit: bool, name: str, graceful_timeout: float = 30.0) -> str:
    exe = shutil.which("pycluster") or f"{sys.executable} -m pycluster.cli"
    exec_start = " ".join([exe, "run", *(shlex.quote(a) for a in run_args)])
    user_lines = ""
    if not user_unit and os.geteuid() != 0:
        import pwd
        user_lines = f"User={pwd.getpwuid(os.geteuid()).pw_name}\n"
    return TEMPLATE.format(name=name, exec_start=exec_start, cwd=os.getcwd(),
                           stop_timeout=int(graceful_timeout) + 5, user_lines=user_lines,
                           wanted_by="default.target" if user_unit else "multi-user.target")


def default_path(name: str, user_unit: bool) -> str:
    if user_unit:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return os.path.join(base, "systemd", "user", f"pycluster-{name}.service")
    return f"/etc/systemd/system/pycluster-{name}.service"
