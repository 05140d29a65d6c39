"""The loss chart (plotext): train and val loss of one run, its sweep overlaid on demand."""

from __future__ import annotations

import math
from dataclasses import dataclass

from textual_plotext import PlotextPlot

from tui.store import Series

MAX_POINTS = 400  # per line: a chart is at most ~200 cells wide, so more points add nothing
OVERLAY_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red", "orange", "white")


def overlay_title(names: list[tuple[str, str]], width: int) -> str:
    """The sweep runs drawn with the selected one, as one title line ("name (colour)"):
    plotext's legend sits inside the plot and, one row per run, covered most of a small
    chart; a colour named in words also reads on a monochrome terminal. No series gets a
    plotext label at all: its legend code raises IndexError when every point of a labelled
    series falls outside the canvas (seen with log-y and a sweep overlay)."""
    parts = [f"{name} ({color})" for name, color in names]
    text = "+ " + ", ".join(parts)
    while len(text) > max(width - 4, 20) and parts:
        parts.pop()
        text = "+ " + ", ".join(parts) + f", … {len(names) - len(parts)} more (c compares)"
    return text


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Every k-th point (plus the last), so drawing costs the same at any run length."""
    n = min(len(xs), len(ys))
    if n <= limit:
        return list(xs[:n]), list(ys[:n])
    step = math.ceil(n / limit)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _finite(xs: list, ys: list, logy: bool) -> tuple[list, list]:
    """The drawable points; with log-y, the y values already as log10 (see log_ticks)."""
    keep = [(x, y) for x, y in zip(xs, ys)
            if y == y and not math.isinf(y) and (not logy or y > 0)]
    return [x for x, _ in keep], [math.log10(y) if logy else y for _, y in keep]


def log_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], list[str]]:
    """Tick positions (log10) and labels (the losses) for a log-y chart drawn on a linear
    axis. plotext's own yscale("log") rewrites the stored data on every build, and Textual
    builds a plot again whenever it repaints it, so the second paint took the log of the
    log (and the third raised a math domain error): the chart does the log itself."""
    if hi <= lo:
        return [lo], [f"{10 ** lo:.3g}"]
    pos = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    return pos, [f"{10 ** p:.3g}" for p in pos]


@dataclass
class ChartOptions:
    overlay: bool = False
    logy: bool = False
    x_tokens: bool = False


class LossChart(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = ChartOptions()
        self.run_id: str | None = None
        self.message = "select a run"
        self.has_data = False

    def describe(self) -> str:
        o = self.options
        parts = ["log-y" if o.logy else "linear", "tokens" if o.x_tokens else "iters"]
        if o.overlay:
            parts.append("+ sweep")
        return " · ".join(parts)

    def plot_runs(self, run_id: str | None, series: Series | None,
                  others: list[tuple[str, Series]], law=None) -> None:
        """Redraw: `series` is the selected run; `others` its sweep mates (overlay on);
        `law` an engine.report.laws.live.Expectation: the law's final val loss and its
        band, drawn at the run's horizon."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.run_id = run_id
        o = self.options
        drew = False
        xs_seen: list = []
        ys_seen: list = []
        key: list[str] = []  # the legend, as the title line: see overlay_title
        if series is not None:
            tx = series.train_tokens if o.x_tokens else series.train_iter
            ex = series.eval_tokens if o.x_tokens else series.eval_iter
            xs, ys = _finite(*thin(tx, series.train_loss), o.logy)
            if xs:
                plt.plot(xs, ys, color="blue+", marker="braille")
                key.append("train (blue)")
                drew = True
                xs_seen += [xs[0], xs[-1]]
                ys_seen += [min(ys), max(ys)]
            xs, ys = _finite(*thin(ex, series.eval_val), o.logy)
            if xs:
                if len(xs) < 40:  # few evals: points, so the train line stays visible
                    plt.scatter(xs, ys, color="orange+", marker="●")
                else:
                    plt.plot(xs, ys, color="orange+", marker="braille")
                key.append("val ● (orange)")
                drew = True
                xs_seen += [xs[0], xs[-1]]
                ys_seen += [min(ys), max(ys)]
        drawn: list[tuple[str, str]] = []
        if o.overlay:
            for i, (rid, s) in enumerate(others):
                x = s.eval_tokens if o.x_tokens else s.eval_iter
                y = s.eval_val
                if not y:  # no eval yet: its train loss is better than nothing
                    x, y = (s.train_tokens if o.x_tokens else s.train_iter), s.train_loss
                xs, ys = _finite(*thin(x, y), o.logy)
                if xs:
                    color = OVERLAY_COLORS[i % len(OVERLAY_COLORS)]
                    plt.plot(xs, ys, color=color, marker="braille")
                    drawn.append((rid.split("/", 1)[-1], color))
                    drew = True
                    xs_seen += [xs[0], xs[-1]]
                    ys_seen += [min(ys), max(ys)]
        if law is not None and drew:
            x = law.horizon_tokens if o.x_tokens else law.horizon_iter
            lo, mid, hi = (math.log10(v) if o.logy else v for v in (law.pi_low, law.predicted, law.pi_high))
            plt.plot([x, x], [lo, hi], color="red+", marker="braille")
            plt.scatter([x], [mid], color="red+", marker="◆")
            key.append("law ◆ (red)")
            xs_seen += [x]
            ys_seen += [lo, hi]
        if drawn or key:
            plt.title(" · ".join(key + ([overlay_title(drawn, self.size.width - 30)]
                                        if drawn else [])))
        if xs_seen and min(xs_seen) == max(xs_seen):
            plt.xlim(0, max(xs_seen) * 2 or 1)  # one point (iter 0): no negative iterations
        if o.logy and ys_seen:
            plt.yticks(*log_ticks(min(ys_seen), max(ys_seen)))
        plt.xlabel("tokens" if o.x_tokens else "iter")
        self.has_data = drew
        if not drew:
            self.message = "no metrics yet" if run_id else "select a run"
            plt.title(self.message)
        self.refresh()
