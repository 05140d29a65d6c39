"""stdout.log of the selected run, fed incrementally by the poll worker."""

from __future__ import annotations

from textual.widgets import Log

MAX_LINES = 2000


class LogView(Log):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, **kwargs)
        self.run_id: str | None = None

    def feed(self, run_id: str | None, text: str, reset: bool) -> None:
        if reset or run_id != self.run_id:
            self.clear()
            self.run_id = run_id
        if text:
            self.write(text)
