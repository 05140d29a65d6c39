"""The course inside the app: a course report over the sweeps a student picks, and a
temperature study of a sweep's finished runs. These dialogs only ask; the app's thread
workers do the work (minutes: a report draws its figures, a study samples every run at
every temperature) and end with a toast naming the files."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, SelectionList

DEFAULT_TEMPERATURES = "0.5,0.8,1.0,1.2"
MAX_TEMPERATURES = 8


class CourseSweepsScreen(ModalScreen[list[str] | None]):
    """Which sweeps the course report covers (all ticked to start)."""

    BINDINGS = [Binding("enter", "write", "write report", priority=True),
                Binding("escape", "cancel", "cancel")]

    def __init__(self, sweeps: list[str]) -> None:
        super().__init__()
        self.sweeps = sweeps

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="course-sweeps"):
            yield Label("Course report over which sweeps?", classes="question")
            yield SelectionList[str](*[(s, s, True) for s in self.sweeps], id="sweeps")
            yield Label("space ticks a sweep · Enter writes the report · Esc cancels",
                        id="error", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#course-sweeps").border_title = "Course report"
        self.query_one(SelectionList).focus()

    def action_write(self) -> None:
        chosen = list(self.query_one(SelectionList).selected)
        if not chosen:
            self.query_one("#error", Label).update("tick at least one sweep (space)")
            return
        self.dismiss(chosen)

    def action_cancel(self) -> None:
        self.dismiss(None)


def parse_temperatures(text: str) -> list[float]:
    """"0.5, 0.8,1.0" -> [0.5, 0.8, 1.0]; ValueError with what is wrong."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    values = [float(p) for p in parts]  # ValueError on a non-number
    if not values or len(values) > MAX_TEMPERATURES or any(t <= 0 for t in values):
        raise ValueError(f"1 to {MAX_TEMPERATURES} temperatures above 0, comma-separated")
    return values


class TemperatureStudyScreen(ModalScreen[list[float] | None]):
    """The temperatures of a study of a sweep's finished runs."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, sweep: str, n_runs: int) -> None:
        super().__init__()
        self.sweep = sweep
        self.n_runs = n_runs

    def compose(self) -> ComposeResult:
        n = self.n_runs
        with Vertical(classes="dialog", id="temperature-study"):
            yield Label(f"Sample the {n} finished run{'s' * (n != 1)} of {self.sweep} at each "
                        f"temperature (saved in each run's temperature.jsonl; the report adds "
                        f"a temperature section)", classes="question")
            yield Input(DEFAULT_TEMPERATURES, id="temperatures")
            yield Label("Enter starts · Esc cancels", id="error", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#temperature-study").border_title = "Temperature study"
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(parse_temperatures(event.value))
        except ValueError:
            self.query_one("#error", Label).update(
                f"1 to {MAX_TEMPERATURES} temperatures above 0, comma-separated "
                f"(e.g. {DEFAULT_TEMPERATURES})")

    def action_cancel(self) -> None:
        self.dismiss(None)
