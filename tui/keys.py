"""The app's own keys, and every key nanotui answers to, gathered from the bindings
themselves so that the help screen stays true."""

from __future__ import annotations

from textual.binding import Binding

APP_BINDINGS = [  # footer order: help first so it survives an 80-column footer
    Binding("question_mark", "help", "help", key_display="?"),
    Binding("l", "launch", "launch"),
    Binding("c", "compare", "compare"),
    Binding("p", "samples", "samples"),
    Binding("e", "report", "report"),
    Binding("E", "course_report", "course report", show=False),
    Binding("T", "temperature_study", "temperature study", show=False),
    Binding("q", "quit", "quit"),
]


def _rows(bindings) -> list[tuple[str, str]]:
    out = []
    for b in bindings:
        if isinstance(b, Binding):
            key = b.key_display or b.key
            out.append((key.replace("question_mark", "?").replace("slash", "/"), b.description))
    return out


def key_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(key, what it does)]) for the help screen."""
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
