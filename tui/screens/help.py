"""Every key nanotui answers to, gathered from the bindings themselves (so it stays true)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def _rows(bindings) -> list[tuple[str, str]]:
    out = []
    for b in bindings:
        if isinstance(b, Binding):
            key = b.key_display or b.key
            out.append((key.replace("question_mark", "?").replace("slash", "/"), b.description))
    return out


def key_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    from tui.app import APP_BINDINGS
    from tui.screens.compare import CompareScreen
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.launch import GpuPickerScreen, LaunchScreen
    from tui.screens.samples import SamplesScreen
    return [
        ("Everywhere", _rows(APP_BINDINGS) + [("ctrl+p", "command palette"),
                                               ("tab", "next panel")]),
        ("Dashboard", [("↑/↓", "select a run")] + _rows(DashboardScreen.BINDINGS)),
        ("Launch", [("space", "select sweep")] + _rows(LaunchScreen.BINDINGS)),
        ("GPU picker", _rows(GpuPickerScreen.BINDINGS)),
        ("Samples", _rows(SamplesScreen.BINDINGS)),
        ("Compare", _rows(CompareScreen.BINDINGS)),
    ]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "close")]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for section, rows in key_sections():
            table.add_row(f"[bold]{section}[/]", "")
            for key, what in rows:
                table.add_row(key, what)
            table.add_row("", "")
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(table)

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "Keys (Esc closes)"

    def action_close(self) -> None:
        self.dismiss(None)
