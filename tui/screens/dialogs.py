"""Small modal dialogs: confirm a destructive action, quit with runs queued, sampling knobs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no; Enter or y confirms, Escape or n cancels."""

    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="error", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer is the default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitScreen(ModalScreen[str]):
    """Runs are queued: keep dispatching in the background, leave them queued, or stay."""

    BINDINGS = [Binding("escape", "choose('cancel')", "stay")]

    def __init__(self, queued: int, dispatcher: int | None = None) -> None:
        super().__init__()
        self.queued = queued
        self.dispatcher = dispatcher

    def compose(self) -> ComposeResult:
        n = self.queued
        # with a dispatcher already running, "keep dispatching" starts nothing new: say so,
        # and that "leave queued" does not stop it
        running = (f" A dispatcher (pid {self.dispatcher}) is already running: it keeps "
                   f"starting them unless stopped." if self.dispatcher else "")
        with Vertical(classes="dialog"):
            yield Label(f"{n} run{'s' * (n != 1)} still queued. Running runs keep running "
                        f"either way.{running}", classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Keep dispatching", variant="primary", id="keep")
                yield Button("Leave queued", id="leave")
                yield Button("Stay", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class GenerateScreen(ModalScreen[dict | None]):
    """Temperature, top-k and length for a new sample from a run's checkpoint."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, run_id: str, prompt: str, temperature: float = 0.8,
                 top_k: int | None = 200, max_new_tokens: int = 200) -> None:
        super().__init__()
        self.run_id = run_id
        self.prompt = prompt
        self.defaults = (temperature, top_k, max_new_tokens)

    def compose(self) -> ComposeResult:
        t, k, n = self.defaults
        with Vertical(classes="dialog"):
            yield Label(f"New sample from {self.run_id}", classes="question")
            with Grid(classes="form"):
                yield Label("prompt")
                yield Input(self.prompt, id="prompt")
                yield Label("temperature")
                yield Input(f"{t:g}", id="temperature", type="number")
                yield Label("top-k (blank: none)")
                yield Input("" if k is None else str(k), id="top_k", type="integer")
                yield Label("new tokens")
                yield Input(str(n), id="max_new_tokens", type="integer")
            yield Label("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Generate", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#temperature", Input).focus()

    def on_input_submitted(self) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        value = {i.id: i.value.strip() for i in self.query(Input)}
        try:
            temperature = float(value["temperature"])
            top_k = int(value["top_k"]) if value["top_k"] else None
            n = int(value["max_new_tokens"])
            if temperature <= 0 or (top_k is not None and top_k < 1) or not 1 <= n <= 10000:
                raise ValueError
        except ValueError:
            self.query_one("#error", Label).update(
                "temperature > 0, top-k ≥ 1 or blank, 1 ≤ new tokens ≤ 10000")
            return
        self.dismiss({"prompt": value["prompt"], "temperature": temperature, "top_k": top_k,
                      "max_new_tokens": n})
