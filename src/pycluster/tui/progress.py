"""`pycluster reload --wait` on a terminal: a progress bar over the workers being replaced."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ReloadBar:
    """Pulses until the first worker is replaced (the total comes with it), then counts."""

    def __init__(self, console: Any):
        self.console = console
        self.progress = Progress(TextColumn("[bold]reload"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("starting the first new worker", total=None)

    def __enter__(self) -> ReloadBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def advance(self, progress: dict[str, Any]) -> None:
        """One reply's ``progress``: {"replaced", "total", "worker", "pid"}."""
        self.progress.update(self.task, completed=progress["replaced"], total=progress["total"],
                             description=f"new worker {progress['worker']} (pid {progress['pid']}) serving")
