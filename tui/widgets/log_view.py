"""stdout.log of the selected run, fed incrementally by the poll worker, wrapped to the
pane's width (a long line, a traceback's last one, stays readable instead of running
off the right edge)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

MAX_LINES = 2000


class LogView(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width: wrap at the pane's own width, however narrow (RichLog's default 78
        # would lay lines out wider than a side pane and cut them)
        super().__init__(max_lines=MAX_LINES, wrap=True, min_width=20, auto_scroll=True,
                         **kwargs)
        self.run_id: str | None = None
        self._partial = ""   # a line still being written (no newline yet)

    def feed(self, run_id: str | None, text: str, reset: bool) -> None:
        if reset or run_id != self.run_id:
            self.clear()
            self.run_id = run_id
            self._partial = ""
        if not text:
            return
        complete, _, self._partial = (self._partial + text).rpartition("\n")
        if complete:
            self.write(Text(complete))   # plain text: a log line is never markup
