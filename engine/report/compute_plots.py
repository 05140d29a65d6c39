"""The report's compute and time figures: val loss against training FLOPs (log-log, with
the compute-efficient frontier) and against training time, every run, read from the one
home of the axes (engine.report.compute through RunSummary.eval_points)."""

from __future__ import annotations

from pathlib import Path

from engine.files import save_png
from engine.report.compute import frontier, lower_envelope
from engine.report.plots import DPI, _fig, _human, _legend, _plt, ordered_colors
from engine.report.summary import RunSummary
from engine.report.tables import fmt


def _curve(s: RunSummary, axis: str) -> list[tuple[float, float]]:
    return [(p.x(axis), r["val_loss"]) for r, p in zip(s.evals, s.eval_points)
            if p.x(axis) is not None and p.x(axis) > 0]


def _name(s: RunSummary, summaries: list[RunSummary]) -> str:
    """The run's name, with its sweep where the runs come from several (a course)."""
    return s.id if len({x.run.sweep for x in summaries}) > 1 else s.run.name


def _label(s: RunSummary, summaries: list[RunSummary]) -> str:
    size = f" ({_human(s.params)})" if s.params else ""
    return _name(s, summaries) + size + ("" if s.state == "done" else f" [{s.state}]")


def loss_vs_axis(summaries: list[RunSummary], axis: str, title: str, path: Path) -> Path | None:
    """Each run's val loss at its evals against `axis` ("flops": log-log; "time": seconds
    on a linear axis), and the lower envelope of all of them, labelled."""
    # smallest model first, so the colour map reads as size across sweeps too
    ordered = sorted(summaries, key=lambda s: (s.params is None, s.params or 0))
    curves = [(s, _curve(s, axis)) for s in ordered]
    curves = [(s, c) for s, c in curves if c]
    if not curves:
        return None
    plt = _plt()
    fig, ax = _fig(plt, len(curves) + 1)
    for (s, c), color in zip(curves, ordered_colors(len(curves))):
        xs, ys = zip(*c)
        ax.plot(xs, ys, color=color, marker="o" if len(c) <= 30 else None, ms=4, lw=1.6,
                label=_label(s, summaries))
    what = "compute" if axis == "flops" else "time"
    env = lower_envelope([c for _, c in curves], log=axis == "flops")
    if len(curves) > 1 and env:
        ax.plot([x for x, _ in env], [y for _, y in env], color="black", lw=2.5, ls="--",
                alpha=0.6, zorder=5, label=f"{what}-efficient frontier")
    if axis == "flops":
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs (6N + attention per token × tokens; log scale)")
        from matplotlib.ticker import LogLocator
        xs = [x for _, c in curves for x, _ in c]
        if max(xs) / min(xs) < 1000:  # few decades: label 1-2-5 ticks, not only powers of ten
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _sci(v)))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:.3g}"))
    else:
        ax.set_xlabel("training time (s; evals and sampling left out)")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(
            lambda v, _: fmt(v, "time") if v >= 60 or v == 0 else f"{v:.3g} s"))
    ax.set_ylabel("val loss (nats/token)")
    ax.set_title(title)
    _legend(ax, n=len(curves) + 1, title="run (params)")
    save_png(fig, path, DPI)
    plt.close(fig)
    return path


def frontier_note(summaries: list[RunSummary]) -> str:
    """One sentence: which runs the compute-efficient frontier passes through, in order."""
    env = frontier([(_name(s, summaries), _curve(s, "flops")) for s in summaries])
    if not env:
        return ""
    spans: list[list] = []
    for x, y, name in env:
        if spans and spans[-1][0] == name:
            spans[-1][2], spans[-1][3] = x, y
        else:
            spans.append([name, x, x, y])
    parts = [f"{n} ({_sci(a)}–{_sci(b)} FLOPs, down to {y:.4f})" if a != b else
             f"{n} ({_sci(a)} FLOPs, {y:.4f})" for n, a, b, y in spans]
    return ("Compute-efficient frontier, from least to most compute: the evals that "
            "reached a lower val loss than any run had with less training compute: "
            + "; ".join(parts) + ".")


def _sci(x: float) -> str:
    return f"{x:.2g}".replace("e+", "e")


def compute_figures(summaries: list[RunSummary], what: str, d: Path) -> list[Path]:
    """loss_vs_compute.png and loss_vs_time.png in `d`: every run's val loss against
    training FLOPs and against training time."""
    out = [loss_vs_axis(summaries, "flops", f"Val loss vs training compute · {what}",
                        d / "loss_vs_compute.png"),
           loss_vs_axis(summaries, "time", f"Val loss vs training time · {what}",
                        d / "loss_vs_time.png")]
    return [p for p in out if p is not None]
