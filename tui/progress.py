"""Progress bars for long headless work, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(description: str, total: float | None = None,
                 enabled: bool | None = None) -> Iterator[Callable[[float, float | None], None]]:
    """Yields update(completed, total=None). A no-op when not attached to a terminal
    (scripts, CI, --json), so machine-readable output stays clean."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda completed, total=None: None
        return
    from rich.progress import (BarColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    from rich.console import Console
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>5.1f}%"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(description, total=total)

        def update(completed: float, total: float | None = None) -> None:
            prog.update(task, completed=completed, **({"total": total} if total else {}))

        yield update


class StageBars:
    """One progress bar per stage the engine announces (prepare: download, checksum,
    tokenize; import: reading and writing a log); nothing at all when disabled (stderr
    not a terminal, --json)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.update = lambda done, total=None: None

    def stage(self, description: str) -> Callable[[int, int], None]:
        """Start a stage (closing the last one); its progress(done, total)."""
        self.close()
        if self.enabled:
            self.bar = progress_bar(description, None, enabled=True)
            self.update = self.bar.__enter__()
        return self.progress

    def progress(self, done: int, total: int) -> None:
        self.update(done, total or None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
