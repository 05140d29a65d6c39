"""Messages posted up from worker threads to the app and screens.

The poll messages coalesce: when the UI falls behind, a newer poll result replaces an
older one still waiting in the queue (each carries the whole current state)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from tui.store import PollResult


class RunsPolled(Message):
    """A fresh view of every run (status) plus which watched runs got new data."""

    def __init__(self, result: PollResult) -> None:
        super().__init__()
        self.result = result

    def can_replace(self, message: Message) -> bool:
        # Only when no new metrics/samples/log text would be lost with the older one.
        if not isinstance(message, RunsPolled):
            return False
        old = message.result
        return not (old.metrics_changed or old.samples_changed or old.log_text or old.log_reset)


class GpusPolled(Message):
    def __init__(self, gpus: list[Any], share: str | None = None) -> None:
        super().__init__()
        self.gpus = gpus
        self.share = share  # the fair-share line (policy.toml), None without a policy

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpusPolled)
