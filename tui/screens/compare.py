"""A sweep's runs side by side, val loss against parameters on log-log axes, and every
run's val loss against the dashboard chart's x axis (the two screens share it)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from tui.feed import RunFeed
from engine.report.course import configuration_name
from engine.report.reading import RunReading
from tui.store import PollResult, latest_samples
from tui.widgets.loss_chart import LossChart
from tui.widgets.format import (DASH, STATE_GLYPH, STATE_STYLE, elide_middle, fmt_loss,
                                fmt_params, fmt_rate, fmt_score)

# "dist-2": distinct-2 (the share of distinct word pairs in the latest samples), short so
# the table fits beside the charts; the title line spells it out
COLUMNS = ("", "run", "params", "best val", "final val", "gap", "tok/s", "TTR", "dist-2")


def summarize(reading: RunReading, series: Any, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one run. State, best val loss, params and tokens/s are the run's one
    reading (the dashboard, `nanotui status` and the report show the same); the final
    val loss and the gap come from the last eval when its records are tailed."""
    final, gap = reading.val_loss, None
    if series is not None and series.eval_val:
        final = series.eval_val[-1]
        tr = series.eval_train[-1]
        gap = final - tr if tr == tr else None
    elif final is not None and reading.train_loss is not None:
        gap = final - reading.train_loss
    latest = list(latest_samples(samples).values())

    def mean(key: str) -> float | None:
        xs = [s.get("metrics", {}).get(key) for s in latest]
        xs = [x for x in xs if isinstance(x, (int, float))]
        return sum(xs) / len(xs) if xs else None
    return {"params": reading.params, "best": reading.best_val_loss, "final": final, "gap": gap,
            "tok_s": reading.tok_s, "ttr": mean("ttr"), "d2": mean("distinct_2")}


def distinct_names(names: list[str]) -> tuple[list[str], str]:
    """The run names without the "key=value" parts every run shares (one seed across a
    size sweep), and those parts: the table shows what tells its runs apart."""
    parts = [n.split(",") for n in names]
    if len(parts) < 2:
        return names, ""
    shared = [p for p in parts[0] if all(p in q for q in parts[1:])]
    if not shared or any(len(q) == len(shared) for q in parts):
        return names, ""
    return [",".join(p for p in q if p not in shared) for q in parts], ",".join(shared)


def chart_points(rows: list) -> list[tuple[int, float, float | None, bool]]:
    """(params, best val loss, sd or None, finished) per configuration: the runs that
    differ only in their seed pooled, so the chart joins one point per configuration, not
    a zigzag through its seeds. The line joins finished configurations only (a running
    run's best so far is not its result; the report's fits leave them out the same way):
    a configuration with a finished seed shows the mean over its finished seeds, one with
    none its best so far, marked apart."""
    groups: dict[str, list[tuple[int, float, bool]]] = {}
    for v, f in rows:
        if f["params"] and f["best"] is not None and f["best"] > 0:
            groups.setdefault(configuration_name(v.name), []).append(
                (f["params"], f["best"], v.finished))
    out = []
    for runs in groups.values():
        fin = [b for _, b, done in runs if done]
        if fin:
            sd = statistics.stdev(fin) if len(fin) > 1 else None
            out.append((runs[0][0], statistics.fmean(fin), sd, True))
        else:
            out.append((runs[0][0], min(b for _, b, _ in runs), None, False))
    return sorted(out)


class CompareScreen(Screen):
    BINDINGS = [
        Binding("left_square_bracket", "sweep(-1)", "prev sweep", key_display="["),
        Binding("right_square_bracket", "sweep(1)", "next sweep", key_display="]"),
        Binding("x", "x_axis", "axis"),
        Binding("b", "bpb", "nats/bpb"),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, feed: RunFeed, sweep: str) -> None:
        super().__init__()
        self.feed = feed
        self.sweep = sweep
        self._signature: tuple | None = None
        self._order: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="compare-body"):
            yield DataTable(id="compare-table", cursor_type="row", classes="panel")
            with Vertical(id="compare-plots"):
                yield PlotextPlot(id="scaling", classes="panel")
                yield LossChart(self.feed.chart_options, id="curves", classes="panel")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for c in COLUMNS:
            table.add_column(c, key=c or "glyph")
        self.query_one("#scaling").border_title = "val loss vs params (log-log)"
        self.feed.runs_signal.subscribe(self, self.on_runs)
        self._watch()
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)

    def on_unmount(self) -> None:
        self.feed.unwatch(self)

    def _views(self) -> list[RunReading]:
        return [v for v in self.feed.views if v.sweep == self.sweep]

    def _watch(self) -> None:
        self.feed.watch(self, [v.id for v in self._views()])
        self.feed.request_poll()

    def on_runs(self, result: PollResult) -> None:
        views = self._views()
        if {v.id for v in views} - self.feed.watching(self):
            self._watch()
        store = self.feed.store
        rows = [(v, summarize(v, store.series(v.id), store.samples(v.id))) for v in views]
        rows.sort(key=lambda r: (r[1]["params"] is None, r[1]["params"] or 0))
        signature = (self.sweep, tuple((v.id, v.state, tuple(f.items())) for v, f in rows))
        if signature == self._signature:
            return  # nothing new: no rebuild, no repaint
        self._signature = signature
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)  # the columns too: their widths follow the new cells
        for c in COLUMNS:
            table.add_column(c, key=c or "glyph")
        cells = [[fmt_params(f["params"]), fmt_loss(f["best"]), fmt_loss(f["final"]),
                  DASH if f["gap"] is None else f"{f['gap']:+.3f}", fmt_rate(f["tok_s"]),
                  fmt_score(f["ttr"]), fmt_score(f["d2"])] for _, f in rows]
        room = self._name_room(cells)
        names, common = distinct_names([v.name for v, _ in rows])
        for (v, f), figures, name in zip(rows, cells, names):
            style = STATE_STYLE.get(v.state, "")
            table.add_row(Text(STATE_GLYPH.get(v.state, "?"), style=style),
                          elide_middle(name, room) if room else name,
                          *(Text(c, justify="right") for c in figures), key=v.id)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))
        self._plot(rows)
        self._order = [v.id for v, _ in rows]  # the curves take the table's order and colours
        self._curves()
        sweeps = self.feed.sweeps()
        pos = f"{sweeps.index(self.sweep) + 1}/{len(sweeps)}" if self.sweep in sweeps else ""
        self.query_one("#title", Static).update(Text.assemble(
            (" Compare ", "bold reverse"), f" {self.sweep} ({pos}) · {len(rows)} runs · "
            + (f"every run {common} · " if common else "")
            + "gap = final val − train loss at the same eval · "
            "dist-2 = distinct-2 of the samples"))

    def _name_room(self, cells: list[list[str]]) -> int:
        """How wide the run column may be for every column to show whole (0: no limit
        known yet); long names are elided in the middle, keeping both ends."""
        table = self.query_one(DataTable)
        width = table.scrollable_content_region.width
        if not width:
            return 0
        labels = COLUMNS[2:]
        used = 1 + sum(max([len(lab)] + [len(row[i]) for row in cells])
                       for i, lab in enumerate(labels))
        used += 2 * table.cell_padding * len(COLUMNS)
        return max(width - used, 12)

    def on_resize(self) -> None:
        self._signature = None  # the run column's room changed: rebuild the rows
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)

    def _plot(self, rows: list) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        pts = chart_points(rows)
        done = [(math.log10(p), math.log10(m)) for p, m, _, fin in pts if fin]
        open_ = [(math.log10(p), math.log10(m)) for p, m, _, fin in pts if not fin]
        for p, m, sd, fin in pts:  # the seeds' spread: a bar of ± sd around the mean
            if fin and sd:
                plt.plot([math.log10(p)] * 2, [math.log10(max(m - sd, 1e-9)), math.log10(m + sd)],
                         color="orange", marker="│")
        if len(done) > 1:
            plt.plot(*zip(*done), color="orange", marker="braille")
        if done:
            plt.scatter(*zip(*done), marker="●", color="orange+")  # after the line: on top
        if open_:
            plt.scatter(*zip(*open_), marker="×", color="gray")
        if pts:
            seeded = any(sd is not None for _, _, sd, _ in pts)
            plt.xlabel("params → best val loss (log-log)"
                       + (" · ● mean over seeds │ ± sd" if seeded else "") + " · × not finished")
            # Tick labels in real units so nobody has to undo the logs in their head.
            plt.xticks([math.log10(p) for p, _, _, _ in pts], [fmt_params(p) for p, _, _, _ in pts])
            plt.yticks([math.log10(m) for _, m, _, _ in pts], [f"{m:.3f}" for _, m, _, _ in pts])
        else:
            plt.title("no run with a val loss yet")
        plot.refresh()

    def _curves(self) -> None:
        """Every run's val loss on the shared x axis (x and b change it here and on the
        dashboard alike)."""
        chart = self.query_one("#curves", LossChart)
        store = self.feed.store
        chart.more_hint = ""  # this is compare: the table lists every run
        runs = [(rid, s) for rid in self._order for s in [store.series(rid)] if s is not None]
        chart.plot_runs(None, None, runs, overlay=True)
        chart.border_title = f"Val loss · {chart.heading()} · every run"
        if chart.bpb_note:
            chart.border_title += f" · {chart.bpb_note}"

    def action_x_axis(self) -> None:
        self.feed.chart_options.next_x()
        self._curves()

    def action_bpb(self) -> None:
        self.feed.chart_options.bpb = not self.feed.chart_options.bpb
        self._curves()

    def action_sweep(self, step: int) -> None:
        sweeps = self.feed.sweeps()
        if not sweeps:
            return
        i = sweeps.index(self.sweep) if self.sweep in sweeps else 0
        self.sweep = sweeps[(i + step) % len(sweeps)]
        self._watch()
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)
