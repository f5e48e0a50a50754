"""`pycluster reload --wait`: follow the reply stream while the workers are replaced.

The master sends one ``{"progress": {replaced, total, worker, pid}}`` reply per
replaced worker, then the result (or an error). On a terminal that drives a
progress bar (tui.reload_bar); anywhere else each reply is a plain line.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from ..control.commands import reload
from ..errors import EXIT_FAILED, EXIT_NO_MASTER


def follow_reload(path: str) -> int:
    from ..control.client import NoMaster, stream
    from ..tui import reload_bar
    bar = reload_bar()

    def on_progress(progress: dict[str, Any]) -> None:
        if bar is not None:
            bar.advance(progress)
        else:
            click.echo(reload.progress_line(progress))

    try:
        with bar or contextlib.nullcontext():  # the bar is gone before the outcome is printed
            code, message = reload.follow(stream(path, reload.request(wait=True)), on_progress)
    except NoMaster as exc:
        code, message = EXIT_NO_MASTER, f"pycluster: {exc}"
    except OSError as exc:  # the master died mid-reload
        code, message = EXIT_FAILED, f"pycluster: lost the master during the reload: {exc}"
    click.echo(message, err=code != 0)
    return code
