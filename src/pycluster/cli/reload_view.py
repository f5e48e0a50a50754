"""`pycluster reload --wait`: progress while the workers are replaced."""

from __future__ import annotations

import click


def follow_reload(path: str) -> int:
    from ..control.client import NoMaster, stream
    try:
        for reply in stream(path, {"cmd": "reload", "wait": True}):
            if not reply.get("ok"):
                err = reply.get("error") or {}
                click.echo(f"pycluster: reload failed: {err.get('message')}", err=True)
                return 1
            result = reply.get("result") or {}
            progress = result.get("progress")
            if progress:
                click.echo(f"replaced {progress['replaced']}/{progress['total']}"
                           f" (worker {progress['worker']}, pid {progress['pid']})")
                continue
            click.echo(f"reloaded: generation {result.get('generation')}, {result.get('replaced')} workers"
                       f" in {result.get('seconds')}s")
            return 0
    except NoMaster as exc:
        click.echo(f"pycluster: {exc}", err=True)
        return 3
    click.echo("pycluster: the master closed the connection during the reload", err=True)
    return 1

