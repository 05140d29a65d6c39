"""The runs table: one row per run, grouped under a row per sweep, filterable."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from engine.report.reading import RunReading
from engine.report.tables import natural_key
from tui.widgets.format import (DASH, STATE_GLYPH, STATE_STYLE, fmt_duration, fmt_iter, fmt_loss,
                                fmt_params, fmt_rate)

COLUMNS = (("run", "run"), ("state", "state"), ("device", "device"),
           ("iter", "iter"), ("train", "train"), ("val", "val"), ("params", "params"),
           ("tok/s", "tok_s"), ("ETA", "eta"))
SWEEP_PREFIX = "sweep:"


def short_reason(reason: str) -> str:
    """A failure reason in a few characters (the log view has the whole story)."""
    low = reason.lower()
    if "out of memory" in low or "oom" in low.split():
        return "OOM"
    if low.startswith("no space left"):
        return "disk full"
    if low.startswith("waiting:"):
        return "waiting"  # for memory or a slot; the whole reason is in the run's details
    return reason.split()[0][:8] if reason.strip() else DASH


def damage_note(v: RunReading) -> str:
    """The run's damaged files as the user reads them, "" when none."""
    notes = [v.reason] if v.reason.startswith("damaged:") else []
    notes += [f"damaged: {d}" for d in v.damaged if f"damaged: {d}" not in notes]
    return " · ".join(notes)


def threads_note(v: RunReading) -> str:
    """A CPU run's thread count now, beside its speed: " 1t" (it follows the free cores)."""
    return f" {v.cpu_threads}t" if v.cpu_threads else ""


def row_cells(v: RunReading) -> tuple:
    style = STATE_STYLE.get(v.state, "")
    last = fmt_duration(v.eta_s) if v.state == "running" else short_reason(v.reason)
    if damage_note(v) and v.state != "running":
        last = "damaged"
    if v.state == "stalled":
        last = fmt_duration(v.stalled_s)  # how long it has been silent
    elif v.imported_from:
        last = "nanoGPT"  # trained there, brought in by `nanotui import`
    elif v.state != "running" and v.run.path.is_symlink():
        last = "shared"  # another sweep's identical run (engine.runs.link_shared)
    name = Text.assemble((STATE_GLYPH.get(v.state, "?"), style), " ", v.name)
    return (name, Text(v.state, style=style), v.device or DASH,
            Text(fmt_iter(v.iter, v.max_iters), justify="right"),
            Text(fmt_loss(v.train_loss, 3), justify="right"),
            Text(fmt_loss(v.val_loss, 3), justify="right"),
            Text(fmt_params(v.params), justify="right"), Text(fmt_rate(v.tok_s) + threads_note(v), justify="right"),
            Text(last, justify="right"))


def matches(v: RunReading, text: str) -> bool:
    """Every space-separated word must appear in the run id, its state or its device."""
    hay = f"{v.id} {v.state} {v.device} {v.reason} {damage_note(v)}".lower()
    return all(w in hay for w in text.lower().split())


class RunTable(DataTable):
    """Rows keyed by run id; sweep header rows keyed "sweep:<name>"."""

    class RunHighlighted(Message):
        def __init__(self, run_id: str | None, sweep: str | None) -> None:
            super().__init__()
            self.run_id = run_id
            self.sweep = sweep

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.filter_text = ""
        self._views: dict[str, RunReading] = {}
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._notes: dict[str, str] = {}

    def on_mount(self) -> None:
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_id(self) -> str | None:
        if not self._order or self.cursor_row >= len(self._order) or self.cursor_row < 0:
            return None
        key = self._order[self.cursor_row]
        return None if key.startswith(SWEEP_PREFIX) else key

    @property
    def selected_sweep(self) -> str | None:
        if not self._order or self.cursor_row >= len(self._order) or self.cursor_row < 0:
            return None
        key = self._order[self.cursor_row]
        return key[len(SWEEP_PREFIX):] if key.startswith(SWEEP_PREFIX) else key.split("/", 1)[0]

    def view(self, run_id: str) -> RunReading | None:
        return self._views.get(run_id)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.show(list(self._views.values()))

    def show(self, views: list[RunReading], notes: dict[str, str] | None = None) -> None:
        """Show these runs; cells that did not change are left alone. `notes`: run id ->
        a few words after the run's name (the scaling law's verdict on a running run)."""
        if notes is not None:
            self._notes = notes
        notes = self._notes
        self._views = {v.id: v for v in views}
        visible = [v for v in views if matches(v, self.filter_text)] if self.filter_text else views
        # runs of a sweep in the order of their varied value: n_head=4, 8, 16, 32
        visible = sorted(visible, key=lambda v: (v.sweep, natural_key(v.name)))
        order: list[str] = []
        rows: dict[str, tuple] = {}
        counts = Counter(v.sweep for v in visible)
        sweep = None
        for v in visible:
            if v.sweep != sweep:
                sweep = v.sweep
                n = counts[sweep]
                key = SWEEP_PREFIX + sweep
                order.append(key)
                rows[key] = (Text(f"▾ {sweep}", style="bold"),
                             Text(f"{n} run{'s' * (n != 1)}", style="dim"), "", "", "", "", "", "", "")
            order.append(v.id)
            rows[v.id] = row_cells(v)
            if v.id in notes:
                style = "bold yellow" if "above" in notes[v.id] else "green"
                rows[v.id] = (Text.assemble(rows[v.id][0], (f" · {notes[v.id]}", style)),
                              *rows[v.id][1:])
        if order != self._order:
            self._rebuild(order, rows)
        else:
            for key in order:
                if rows[key] != self._cells.get(key):
                    for (_, col), value in zip(COLUMNS, rows[key]):
                        self.update_cell(key, col, value, update_width=True)
        self._cells = rows

    def _rebuild(self, order: list[str], rows: dict[str, tuple]) -> None:
        keep = self.selected_id or (self._order[self.cursor_row] if self._order and
                                    0 <= self.cursor_row < len(self._order) else None)
        first = not self._order
        self.clear()
        for key in order:
            self.add_row(*rows[key], key=key)
        self._order = order
        if keep in order:
            self.move_cursor(row=order.index(keep))
        elif first and order:
            # Start on the first run rather than on a sweep header.
            self.move_cursor(row=1 if len(order) > 1 else 0)
        self._announce()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._announce()

    def _announce(self) -> None:
        self.post_message(self.RunHighlighted(self.selected_id, self.selected_sweep))
