"""What the app's two polls publish, handed to every screen when it is created.

The app polls the runs directory and the GPUs in thread workers; each result lands here
(on the UI thread) and is published on a signal the screens subscribe to. Screens read
the latest result, say which runs they show (`watch`) and ask for a poll sooner
(`request_poll`) through this object; they never reach into the app for it, so a screen
works with any feed a test builds.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from textual.dom import DOMNode
from textual.signal import Signal

from engine.report.reading import RunReading
from tui.store import PollResult, RunStore
from tui.widgets.gpu_panel import GpuHistory
from tui.widgets.loss_chart import ChartOptions


class RunFeed:
    def __init__(self, owner: DOMNode, store: RunStore,
                 request_poll: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.runs_signal: Signal[PollResult] = Signal(owner, "runs")
        self.gpus_signal: Signal[list] = Signal(owner, "gpus")
        self.last_poll: PollResult | None = None
        self.gpus: list[Any] = []
        self.share_line: str | None = None  # the fair-share policy's line, if any
        self.gpu_history = GpuHistory()
        self.chart_options = ChartOptions()  # the dashboard's and compare's, one axis for both
        self._request_poll = request_poll
        self._watchers: dict[int, frozenset[str]] = {}

    # -- in, from the app's poll workers (on the UI thread) --
    def publish_runs(self, result: PollResult) -> None:
        self.last_poll = result
        self.runs_signal.publish(result)

    def publish_gpus(self, gpus: list[Any], share: str | None = None) -> None:
        self.gpus = gpus
        self.share_line = share
        self.gpu_history.add(gpus)
        self.gpus_signal.publish(gpus)

    # -- out, to screens --
    @property
    def views(self) -> tuple[RunReading, ...]:
        return self.last_poll.views if self.last_poll else ()

    def view(self, run_id: str | None) -> RunReading | None:
        return next((v for v in self.views if v.id == run_id), None)

    def sweeps(self) -> list[str]:
        return sorted({v.sweep for v in self.views})

    def queued_count(self) -> int:
        """Queued runs, a shared run once (its other sweeps' entries are links to it)."""
        return sum(v.state == "queued" and not v.run.path.is_symlink() for v in self.views)

    @property
    def dispatcher(self) -> int | None:
        """The pid of the dispatcher holding the runs directory (None: none runs)."""
        return self.last_poll.dispatcher if self.last_poll else None

    def request_poll(self) -> None:
        self._request_poll()

    def watch(self, owner: object, ids: Iterable[str]) -> None:
        """Screens say which runs' metrics and samples they show; the store tails those."""
        self._watchers[id(owner)] = frozenset(ids)
        self.store.watch(set().union(*self._watchers.values()))

    def unwatch(self, owner: object) -> None:
        self._watchers.pop(id(owner), None)
        self.store.watch(set().union(*self._watchers.values()) if self._watchers else ())

    def watching(self, owner: object) -> frozenset[str]:
        return self._watchers.get(id(owner), frozenset())
