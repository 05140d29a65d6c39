"""The loss chart (plotext): train and val loss of one run, its sweep overlaid on demand,
against iterations, tokens, training time or training FLOPs (engine.report.compute), in
nats per token or bits per byte."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from textual_plotext import PlotextPlot

from engine.report.compute import LN2, X_AXES, X_LABELS
from tui.widgets.format import elide_middle

LOG_X = ("flops",)  # the x axes drawn in log10
X_SHORT = {"iter": "iters", "tokens": "tokens", "time": "train time", "flops": "train FLOPs"}
from tui.store import Series

MAX_POINTS = 400  # per line: a chart is at most ~200 cells wide, so more points add nothing
OVERLAY_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red", "orange", "white")


def overlay_title(names: list[tuple[str, str]], width: int, more: str = " (c compares)") -> str:
    """The sweep runs drawn with the selected one, as one title line ("name (colour)"):
    plotext's legend sits inside the plot and, one row per run, covered most of a small
    chart; a colour named in words also reads on a monochrome terminal. No series gets a
    plotext label at all: its legend code raises IndexError when every point of a labelled
    series falls outside the canvas (seen with log-y and a sweep overlay). Runs that vary
    one key are named by its value once: "n_embd = 32 (cyan), 64 (magenta)"."""
    limit = max(width - 4, 20)
    prefix = ""
    if len(names) > 1 and all(n.count("=") == 1 and "," not in n for n, _ in names) \
            and len({n.partition("=")[0] for n, _ in names}) == 1:
        prefix = f"{names[0][0].partition('=')[0]} = "
        names = [(name.partition("=")[2], color) for name, color in names]
    parts = [f"{name} ({color})" for name, color in names]
    for k in range(len(parts), 0, -1):
        if k == len(parts):
            text = "+ " + prefix + ", ".join(parts)
            if len(text) <= limit:
                return text
            continue
        body = "+ " + prefix + ", ".join(parts[:k]) + f", … {len(parts) - k} more"
        for text in (body + more, body):  # the hint goes before a name does
            if len(text) <= limit:
                return text
    return elided_overlay_title(names, limit, prefix)


def elided_overlay_title(names: list[tuple[str, str]], limit: int, prefix: str = "") -> str:
    """The legend when not even one name fits whole: the first, its middle elided (a
    blank legend would leave the user guessing which colour is which run)."""
    name, color = names[0]
    tail = f", … {len(names) - 1} more" if len(names) > 1 else ""
    room = limit - len("+ " + prefix + f" ({color})" + tail)
    return "+ " + prefix + elide_middle(name, max(room, 3)) + f" ({color})" + tail


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


def _finite(xs: list, ys: list, logy: bool, scale: float = 1.0,
            logx: bool = False) -> tuple[list, list]:
    """The drawable points (x known, y finite), y divided by `scale` (bits per byte);
    with log-y / log-x, the values already as log10 (see log_ticks)."""
    keep = [(x, y / scale) for x, y in zip(xs, ys)
            if x is not None and (not logx or x > 0)
            and y == y and not math.isinf(y) and (not logy or y > 0)]
    return ([math.log10(x) if logx else x for x, _ in keep],
            [math.log10(y) if logy else y for _, y in keep])


def _law_x(law, series: Series | None, axis: str) -> float | None:
    """The run's horizon on the shown x axis: its iterations, tokens, FLOPs, or training
    time extrapolated from the time per step so far (the ETA's rule); None when unknown."""
    if axis == "iter":
        return law.horizon_iter
    if axis == "tokens":
        return law.horizon_tokens
    if series is None:
        return None
    if axis == "flops":
        return series.axes.flops(law.horizon_tokens)
    times = [(i, t) for i, t in zip(series.train_iter, series.train_time) if t is not None]
    if not times or not times[-1][0]:
        return None
    it, t = times[-1]
    return t * law.horizon_iter / it


def si(x: float) -> str:
    """A tick label: 3 significant digits with an SI prefix (12.5k, 3.2G, 1.1P)."""
    for unit, div in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def clock(x: float) -> str:
    """A tick label in training time: 45s, 12m30s, 2h05m."""
    s = int(round(x))
    if s < 60:
        return f"{x:.2g}s" if x < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def x_ticks(lo: float, hi: float, axis: str, n: int = 5) -> tuple[list[float], list[str]]:
    """Tick positions and labels for the x axis: plotext writes big numbers as 1.3e+10
    and seconds as plain floats; these read as tokens, FLOPs and minutes. FLOPs are on a
    log axis (lo and hi are log10), as in the report's loss_vs_compute.png: runs of
    different sizes span decades of compute."""
    label = clock if axis == "time" else (lambda p: si(10 ** p)) if axis in LOG_X else si
    if hi <= lo:
        return [lo], [label(lo)]
    pos = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    return pos, [label(p) for p in pos]


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
    """How the chart draws; one instance is shared by the dashboard and compare (RunFeed),
    so both show the same axis."""
    overlay: bool = False
    logy: bool = False
    x_axis: str = "iter"     # one of X_AXES
    bpb: bool = False        # bits per byte instead of nats per token

    def next_x(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]

    @property
    def y_name(self) -> str:
        return "bits/byte" if self.bpb else "nats/token"

    def heading(self) -> str:
        """The chart's title: what is drawn against what, short enough for a half screen."""
        return f"{self.y_name} vs {X_SHORT[self.x_axis]}"


def y_scale(options: ChartOptions, series: Series) -> float | None:
    """What a loss is divided by on the y axis: 1 for nats, ln 2 × bytes per token for
    bits per byte; None where the run's data does not say its bytes per token."""
    if not options.bpb:
        return 1.0
    bpt = series.axes.bytes_per_token
    return LN2 * bpt if bpt else None


class LossChart(PlotextPlot):
    def __init__(self, options: ChartOptions | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.options = options or ChartOptions()
        self.bpb_note = ""  # why bits per byte are not drawn, when asked for
        self._last: tuple | None = None  # plot_runs' arguments, to fit a new size
        self.more_hint = " (c compares)"  # where a key too long for the title is shown whole
        self.run_id: str | None = None
        self.message = "select a run"
        self.has_data = False
        self.empty_note = ""  # a run without metrics: why (e.g. its waiting reason), shown whole

    def on_resize(self) -> None:
        """The title line (the sweep's key) is fitted to the width: fit it again."""
        if self._last is not None:
            self.plot_runs(*self._last)

    def show_empty_note(self, note: str) -> None:
        """Say `note` inside an empty chart, wrapped to its width: a waiting reason is often
        longer than the border can hold."""
        if note != self.empty_note:
            self.empty_note = note
            if not self.has_data and self._last is not None:
                self.plot_runs(*self._last)

    def heading(self) -> str:
        """What the chart draws against what, as its title says it."""
        o = self.options
        if self.bpb_note and o.bpb:
            return f"nats/token (bpb n/a) vs {X_SHORT[o.x_axis]}"
        return o.heading()

    def describe(self) -> str:
        o = self.options
        return " · ".join(["log-y" if o.logy else "linear y"] + (["+ sweep"] if o.overlay else []))

    def plot_runs(self, run_id: str | None, series: Series | None,
                  others: list[tuple[str, Series]], overlay: bool | None = None,
                  law=None) -> None:
        """Redraw: `series` is the selected run; `others` its sweep mates (drawn when the
        overlay is on, or when `overlay` says so: compare draws a sweep without a run);
        `law` an engine.report.laws.live.Expectation: the law's final val loss and its
        band, drawn at the run's horizon on whichever x axis is shown."""
        self._last = (run_id, series, others, overlay, law)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.run_id = run_id
        o = self.options
        axis = o.x_axis
        logx = axis in LOG_X
        drew = False
        xs_seen: list = []
        ys_seen: list = []
        key: list[str] = []  # the legend, as the title line: see overlay_title

        def draw(xs: list, ys: list, color: str, scatter: bool = False) -> bool:
            if not xs:
                return False
            if scatter:
                plt.scatter(xs, ys, color=color, marker="●")
            else:
                plt.plot(xs, ys, color=color, marker="braille")
            xs_seen.extend([min(xs), max(xs)])
            ys_seen.extend([min(ys), max(ys)])
            return True

        bpb = o.bpb
        self.bpb_note = ""
        if bpb and series is not None and y_scale(o, series) is None:
            # the selected run's data does not know its bytes per token: nats, and say so
            self.bpb_note = series.axes.bpb_note or "bpb n/a"
            bpb = False
        opts = ChartOptions(o.overlay, o.logy, axis, bpb)
        if series is not None:
            scale = y_scale(opts, series) or 1.0
            if draw(*_finite(*thin(series.train_x(axis), series.train_loss), o.logy, scale, logx),
                    "blue+"):
                key.append("train (blue)")
            xs, ys = _finite(*thin(series.eval_x(axis), series.eval_val), o.logy, scale, logx)
            # few evals: points, so the train line stays visible
            if draw(xs, ys, "orange+", scatter=len(xs) < 40):
                key.append("val ● (orange)")
        drawn: list[tuple[str, str]] = []
        missing = 0
        if o.overlay if overlay is None else overlay:
            for i, (rid, s) in enumerate(others):
                scale = y_scale(opts, s)
                if scale is None:
                    missing += 1
                    continue
                x, y = s.eval_x(axis), s.eval_val
                if not y:  # no eval yet: its train loss is better than nothing
                    x, y = s.train_x(axis), s.train_loss
                color = OVERLAY_COLORS[i % len(OVERLAY_COLORS)]
                if draw(*_finite(*thin(x, y), o.logy, scale, logx), color):
                    drawn.append((rid.split("/", 1)[-1], color))
        if missing:
            self.bpb_note = self.bpb_note or f"bpb n/a for {missing} run{'s' * (missing > 1)}"
        drew = bool(key or drawn)
        x = _law_x(law, series, axis) if law is not None and drew else None
        if x is not None:
            scale = (y_scale(opts, series) if series is not None else None) or 1.0
            xs3, ys3 = _finite([x] * 3, [law.pi_low, law.predicted, law.pi_high],
                               o.logy, scale, logx)
        if x is not None and len(ys3) == 3:
            (xl, lo, mid, hi) = (xs3[0], *ys3)
            plt.plot([xl, xl], [lo, hi], color="red+", marker="braille")
            plt.scatter([xl], [mid], color="red+", marker="◆")
            key.append("law ◆ (red)")
            xs_seen.append(xl)
            ys_seen.extend([lo, hi])
        if drawn or key:
            room = self.size.width - (len(" · ".join(key)) + 6 if key else 2)  # beside the key
            title = " · ".join(key + ([overlay_title(drawn, room, self.more_hint)] if drawn else []))
            first, color = drawn[0] if drawn else ("", "")
            if drawn and (len(title) > self.size.width - 6
                          or f"{first.partition('=')[2] or first} ({color})" not in title):
                # plotext drops a title wider than the plot, and an elided first name
                # says little: the sweep's key alone, since the selected run's blue and
                # orange are the chart's constant
                title = overlay_title(drawn, self.size.width - 2, self.more_hint)
            plt.title(title)
        lo, hi = (min(xs_seen), max(xs_seen)) if xs_seen else (0, 0)
        if xs_seen and lo == hi:  # one point (iter 0): no negative iterations
            lo, hi = (lo - 0.5, hi + 0.5) if logx else (0, hi * 2 or 1)
            plt.xlim(lo, hi)
        if xs_seen and axis != "iter":
            plt.xticks(*x_ticks(lo, hi, axis))
        if o.logy and ys_seen:
            plt.yticks(*log_ticks(min(ys_seen), max(ys_seen)))
        plt.xlabel(X_LABELS[axis] + (" (log)" if logx else ""))
        self.has_data = drew
        if not drew:
            self.message = "no metrics yet" if run_id or others else "select a run"
            if axis in ("time", "flops") and series is not None and series.train_iter:
                self.message = f"no {X_LABELS[axis]} in this run's records"
            plt.title(self.message)
            if self.empty_note and self.message == "no metrics yet":
                self._write_note(plt, self.empty_note)
        self.refresh()

    def _write_note(self, plt, note: str) -> None:
        """The note as text lines in the empty plot area, top down."""
        rows = max(self.size.height - 6, 2)  # the plot area's rows, about: one y unit each
        lines = textwrap.wrap(note, max(self.size.width - 8, 20))[:rows - 1]
        plt.xlim(0, 1)
        plt.ylim(0, rows)
        plt.xticks([])
        plt.yticks([])
        for i, line in enumerate(lines):
            plt.text(line, 0.0, rows - 1 - i, alignment="left", color="yellow")
