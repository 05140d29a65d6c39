"""Figures of the course report (matplotlib, Agg): per-step training curves with a zoom on
the late part where runs differ, and loss/diversity against the varied key or size.

Colours run along one sequential colour map in the order of the varied value (small to
large), and legends list the runs in that order, so the colour itself reads as the value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.files import save_png
from engine.report.course import Member, Stat, same_params
from engine.report.summary import MIN_WORDS
from engine.report.plots import DPI, _human, _log_x, _plt, ordered_colors
from engine.report.decoding import diversity

LATE_FROM = 0.4          # the zoom panel shows the last 60% of training ...
LATE_Y_FROM = 0.6        # ... with a y range that fits the last 40%, where runs differ


member_colors = ordered_colors


def smooth(y: np.ndarray, frac: float = 0.08) -> np.ndarray:
    """A centred moving average over `frac` of the points (at least 5), computed as a local
    straight-line fit over the window (the same as the mean where the window is whole).
    Near the ends the window is cut short on one side; a plain mean there averages only
    earlier, higher losses and ends above the raw curve (0.2 nats on a short run), while
    the line's value at the point follows the trend."""
    n = len(y)
    w = min(max(5, int(n * frac)) | 1, (n - 1) | 1)  # never wider than the data
    if w <= 1 or n < 3:
        return y
    h = w // 2
    i = np.arange(n)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h, n - 1) + 1

    def window_sum(v: np.ndarray) -> np.ndarray:
        c = np.concatenate(([0.0], np.cumsum(v, dtype=float)))
        return c[hi] - c[lo]
    x = i.astype(float)
    k, sx, sy = window_sum(np.ones(n)), window_sum(x), window_sum(y)
    sxx, sxy = window_sum(x * x), window_sum(x * y)
    var = k * sxx - sx * sx
    slope = np.divide(k * sxy - sx * sy, var, out=np.zeros(n), where=var > 0)
    return sy / k + slope * (x - sx / k)


def _train_curve(s) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iter"], r["loss"]) for r in s.trains
           if isinstance(r.get("iter"), (int, float)) and isinstance(r.get("loss"), (int, float))]
    if not pts:
        return np.array([]), np.array([])
    a = np.array(pts, dtype=float)
    return a[:, 0], a[:, 1]


def _val_points(s) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([(r.get("iter", 0), r["val_loss"]) for r in s.evals], dtype=float)
    return (a[:, 0], a[:, 1]) if len(a) else (np.array([]), np.array([]))


def seed_mean(runs, curve, smoothed: bool = True):
    """A configuration's curve over its seeds, on the iterations they all reached:
    (x, raw mean, smoothed mean, (min, max) of the seeds' smoothed curves or None)."""
    curves = [curve(s) for s in runs]
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return np.array([]), np.array([]), np.array([]), None
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    x = np.array(common, dtype=float)
    ys = np.array([np.interp(x, cx, cy) for cx, cy in curves])
    sm = np.array([smooth(y) for y in ys]) if smoothed else ys
    band = (sm.min(axis=0), sm.max(axis=0)) if len(curves) > 1 else None
    return x, ys.mean(axis=0), sm.mean(axis=0), band


def member_label(m: Member, key: str | None) -> str:
    value = m.value(key) if key else None
    text = f"{key}={value}" if key and value is not None else m.label
    if len(m.runs) > 1:
        text += f" ({len(m.finished)}/{len(m.runs)} seeds)" if len(m.finished) != len(m.runs) \
            else f" ({len(m.runs)} seeds)"
    if not m.finished:
        text += f" [{m.first.state}]"
    return text


def training_curves(members: list[Member], key: str | None, title: str, path: Path) -> Path | None:
    """Left: the whole run, log loss axis: per-step train loss (raw faint, smoothed solid;
    with seeds their mean, the band their range) and val loss at each eval (dots, the mean
    over seeds). Right: the late part, with its own y range."""
    plt = _plt()
    members = [m for m in members if any(s.trains or s.evals for s in m.runs)]
    if not members:
        return None
    fig, (full, late) = plt.subplots(1, 2, figsize=(13.5, 5.4), layout="constrained")
    colors = member_colors(len(members))
    end = max((float(x) for m in members for s in m.runs
               for x in [*_train_curve(s)[0], *_val_points(s)[0]]), default=1.0)
    start, y_from = LATE_FROM * end, LATE_Y_FROM * end
    lo, hi = np.inf, -np.inf
    for m, c in zip(members, colors):
        x, raw, mean, band = seed_mean(m.runs, _train_curve)
        vx, vy, _, vband = seed_mean(m.runs, _val_points, smoothed=False)
        for ax in (full, late):
            if len(x):
                ax.plot(x, raw, color=c, lw=0.6, alpha=0.18)
                if band is not None:  # the seeds' range around their mean
                    ax.fill_between(x, band[0], band[1], color=c, alpha=0.15, lw=0)
                ax.plot(x, mean, color=c, lw=1.8)
            if len(vx):
                ax.plot(vx, vy, color=c, ls="none", marker="o", ms=5,
                        markeredgecolor="black", markeredgewidth=0.6)
        for xs, ys in ((x, mean), (vx, vy)):
            keep = xs >= y_from
            if len(xs) and keep.any():
                lo, hi = min(lo, ys[keep].min()), max(hi, ys[keep].max())
    full.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
    full.yaxis.set_major_locator(MaxNLocator(nbins=7))  # evenly spaced labels on the log axis
    full.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    full.yaxis.set_minor_formatter(NullFormatter())
    full.set_title("whole run (log loss axis)")
    late.set_xlim(start, end * 1.01)
    if np.isfinite(lo) and hi > lo:
        pad = 0.08 * (hi - lo)
        late.set_ylim(lo - pad, hi + pad)
    late.set_title(f"late part (from iteration {start:,.0f})")
    for ax in (full, late):
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
    full.set_ylabel("cross-entropy loss (nats/token)")
    late.yaxis.set_minor_formatter(NullFormatter())
    _curves_legend(late, members, colors, key)
    fig.suptitle(title)
    save_png(fig, path, DPI)
    plt.close(fig)
    return path


def _curves_legend(ax, members: list[Member], colors, key: str | None) -> None:
    """Configurations in the order of the varied value, then what each mark means."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, lw=3) for c in colors]
    labels = [member_label(m, key) for m in members]
    handles += [Line2D([], [], color="grey", lw=0.8, alpha=0.4),
                Line2D([], [], color="grey", lw=1.8),
                Line2D([], [], color="grey", ls="none", marker="o", markeredgecolor="black")]
    labels += ["train, per step", "train, smoothed", "val (each eval)"]
    if any(len(m.runs) > 1 for m in members):
        from matplotlib.patches import Patch
        handles.append(Patch(color="grey", alpha=0.3))
        labels.append("range over seeds")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
              title=f"{key} (small → large)" if key else "run", borderaxespad=0.0)


def _errorbar(ax, xs, stats: list[Stat | None], **kw) -> None:
    pts = [(x, s) for x, s in zip(xs, stats) if s is not None]
    if not pts:
        return
    ax.errorbar([x for x, _ in pts], [s.mean for _, s in pts],
                yerr=[s.sd or 0.0 for _, s in pts], capsize=4, **kw)


def x_name(members: list[Member], key: str | None) -> str:
    """What `versus` plots against: the varied key when the size does not change."""
    done = [m for m in members if m.finished and m.params]
    return key if key is not None and same_params(done) else "params"


def versus(members: list[Member], key: str | None, decoding: tuple | None, title: str,
           path: Path) -> Path | None:
    """Best val loss and diversity (mean ± sd over seeds) against the varied key when the
    sweep's parameter count does not change (heads), else against parameters."""
    plt = _plt()
    done = [m for m in members if m.finished and m.params]
    if not done:
        return None
    by_key = x_name(done, key) == key
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 5.0), layout="constrained")
    if by_key:
        values = [m.value(key) for m in done]
        xs = list(range(len(done)))  # equally spaced, labelled with the values
        for ax in (left, right):
            ax.set_xticks(xs, [str(v) for v in values])
            ax.set_xlabel(f"{key} (parameters fixed at {_human(done[0].params)})")
    else:
        xs = [m.params for m in done]
    colors = member_colors(len(done))
    _errorbar(left, xs, [m.best_val for m in done], color="black", lw=1.2, zorder=1)
    left.scatter(xs, [m.best_val.mean for m in done], c=colors, s=70, edgecolor="black", zorder=3)
    left.set_ylabel("best val loss (nats/token)")
    left.set_title("best val loss" + (" (mean ± sd over seeds)"
                                      if any(len(m.finished) > 1 for m in done) else ""))
    if decoding is not None:
        metrics = (("ttr", "TTR", "o"), ("distinct_2", "distinct-2", "s"),
                   ("repetition_4", "repetition-4", "^"))
        for j, (metric, name, marker) in enumerate(metrics):
            stats = [Stat.of([diversity(s, decoding)[0].get(metric) for s in m.finished])
                     for m in done]
            # each metric a little apart on x, so one never hides another of equal score
            shift = j - (len(metrics) - 1) / 2
            dodged = ([x + 0.06 * shift for x in xs] if by_key else
                      [x * (1 + 0.015 * shift) for x in xs])
            _errorbar(right, dodged, stats, marker=marker, ms=7, label=name)
        words = [d.get("words", 0.0) * n for m in done for s in m.finished
                 for d, n, _ in [diversity(s, decoding)]]
        few = min(words, default=0.0)
        right.set_title(f"sample diversity (≥ {few:.0f} words per run"
                        + (": too few to compare)" if few < MIN_WORDS else ")"))
        right.set_ylim(-0.02, 1.02)
        right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="metric")
    right.set_ylabel("score (fraction)")
    if decoding is None:
        right.set_title("sample diversity (no samples)")
    if not by_key:
        for ax in (left, right):
            scale = _log_x(ax, xs)
            ax.set_xlabel(f"parameters N ({scale})")
        for i, (m, x) in enumerate(zip(done, xs)):
            last = i == len(done) - 1  # the rightmost label goes left, inside the axes
            left.annotate(f"{key}={m.value(key)}" if key else m.label, (x, m.best_val.mean),
                          textcoords="offset points", xytext=(-8, 6) if last else (8, 6),
                          ha="right" if last else "left", fontsize=10)
    fig.suptitle(title)
    save_png(fig, path, DPI)
    plt.close(fig)
    return path
