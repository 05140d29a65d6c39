"""PNG figures for reports (matplotlib, Agg backend): sized and styled for print.

Legends always sit outside the axes (right of them, or below for many runs) so they
never cover a curve; layouts are constrained so labels never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.report.course import Stat, label_of
from engine.files import save_png
from engine.report.summary import RunSummary
from engine.report.decoding import diversity
from engine.report.tables import group_value, natural_key

DPI = 160
_STYLE = {
    "font.size": 13, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 11,
    "xtick.labelsize": 12, "ytick.labelsize": 12, "lines.linewidth": 2.0,
    "axes.grid": True, "grid.alpha": 0.3,
}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.rcParams.update(_STYLE)
    return plt


def _colors(n: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "viridis")
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def ordered_colors(n: int):
    """Colours along one sequential map, small to large: for runs in the order of their
    varied value, so the colour itself reads as the value. Stops short of viridis' pale
    yellow end, which vanishes on white paper."""
    cmap = _plt().get_cmap("viridis")
    return [cmap(0.05 + 0.8 * i / max(n - 1, 1)) for i in range(n)]


def _legend(ax, handles=None, labels=None, n: int = 1, title: str | None = None):
    kw = {} if handles is None else {"handles": handles, "labels": labels}
    if n > 12:  # many runs: several columns below the axes
        return ax.legend(**kw, loc="upper center", bbox_to_anchor=(0.5, -0.18),
                         ncol=min(4, (n + 7) // 8), frameon=False, title=title, fontsize=9)
    return ax.legend(**kw, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                     title=title, borderaxespad=0.0)


def _fig(plt, n_legend: int, width: float = 11.0, height: float = 6.0):
    extra = 0.0 if n_legend <= 12 else 0.32 * ((n_legend + 3) // 4) + 0.4
    return plt.subplots(figsize=(width, height + extra), layout="constrained")


def _log_x(ax, values) -> str:
    """A log x axis with plain labels ("10k", "2M"): majors at 1-1.5-2-3-5-7 or 1-2-5 when
    the data span one or two decades (else too few ticks), powers of ten otherwise; minors
    unlabelled so labels never collide. Sizes within a factor of 2 get a linear axis with
    enough digits to tell the ticks apart. Returns the axis label's scale note."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    lo, hi = min(values), max(values)
    if hi / lo < 2:
        sig = 3 if hi == lo else max(3, math.ceil(math.log10(hi / (hi - lo))) + 2)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v, sig)))
        return "linear scale"
    ax.set_xscale("log")
    subs = ((1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if hi / lo < 10 else
            (1.0, 2.0, 5.0) if hi / lo < 100 else (1.0,))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    return "log scale"


def _human(n: float, sig: int = 3) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{sig}g}{unit}"
    return f"{n:.{sig}g}"


def loss_curves(summaries: list[RunSummary], x: str, title: str, path: Path,
                group_by: str | None = None) -> Path | None:
    """Train (dashed) and val (solid) loss per run; x is "iter" or "tokens". With
    group_by, runs are coloured by that config value (a 32-run grid stays readable)."""
    plt = _plt()
    runs = [s for s in summaries if s.evals or s.trains]
    if not runs:
        return None
    from matplotlib.lines import Line2D
    if group_by:
        keys = [f"{group_by}={group_value(s, group_by)}" for s in runs]
    else:
        keys = [s.run.name if s.state == "done" else f"{s.run.name} [{s.state}]" for s in runs]
    uniq = list(dict.fromkeys(keys))  # runs come smallest first
    if group_by:
        uniq.sort(key=natural_key)  # n_embd=64 before n_embd=128
    fig, ax = _fig(plt, len(uniq) + 2)
    colors = dict(zip(uniq, ordered_colors(len(uniq))))
    for s, k in zip(runs, keys):
        color = colors[k]
        # Train loss from the eval records (averaged over eval_iters batches): far less
        # noisy than the per-step loss, which is used only when there are no evals.
        tr = [(r, r.get("train_loss")) for r in s.evals if r.get("train_loss") is not None]
        if len(tr) < 2:
            tr = [(r, r.get("loss")) for r in s.trains if r.get("loss") is not None]
        va = [(r, r["val_loss"]) for r in s.evals]

        def xs(pairs):
            return [(s.tokens_at(r) if x == "tokens" else r.get("iter")) for r, _ in pairs]
        if tr:
            ax.plot(xs(tr), [v for _, v in tr], ls="--", lw=1.5, color=color, alpha=0.8)
        if va:
            ax.plot(xs(va), [v for _, v in va], ls="-", color=color,
                    marker="o" if len(va) <= 30 else None, ms=4)
    handles = [Line2D([], [], color=colors[k], lw=3) for k in uniq]
    labels = list(uniq)
    handles += [Line2D([], [], color="black", ls="-"), Line2D([], [], color="black", ls="--")]
    labels += ["val loss", "train loss"]
    _legend(ax, handles, labels, n=len(labels), title=group_by or "run")
    if x == "tokens":
        ax.set_xlabel("training tokens seen")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _human(v)))
    else:
        ax.set_xlabel("iteration (optimizer steps)")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    save_png(fig, path, DPI)
    plt.close(fig)
    return path


@dataclass
class _Config:
    """One configuration's points: its runs (seeds) and best val loss over the finished."""
    id: str
    group: str
    params: float               # under the fits' convention
    runs: list[RunSummary]
    loss: Stat | None            # over the finished seeds; None when none finished

    @property
    def finished(self) -> list[RunSummary]:
        return [s for s in self.runs if s.finished]


def _configurations(runs: list[RunSummary], key) -> list[_Config]:
    """Runs that differ only in their seed, pooled (engine.report.course.label_of)."""
    groups: dict[str, list[RunSummary]] = {}
    for s in runs:
        if s.params and s.best_val is not None:
            groups.setdefault(f"{s.run.sweep}/{label_of(s)}", []).append(s)
    out = []
    for cid, ss in groups.items():
        loss = Stat.of([s.best_val for s in ss if s.finished])
        out.append(_Config(cid, key(ss[0]), ss[0].params, ss, loss))
    return sorted(out, key=lambda c: (c.params, c.id))


def loss_vs_params(study: list[RunSummary], fits: list, highlight_sweep: str | None,
                   path: Path, group_by: str | None = None) -> Path | None:
    """Best val loss against parameter count (the fits' convention), log-log: each
    configuration's mean over its finished seeds ± their sd (the point a fit uses), its
    seeds as small rings, and each tokenizer + data group's law with its band and held-out
    check (engine.report.law_figure); the y axis fitted to the data, so a law's far ends
    never squash the points."""
    from engine.report.law_figure import draw_fits
    from engine.report.laws.points import n_of
    plt = _plt()
    fitted = [g for g in fits if g.fit is not None]
    convention = fitted[0].fit.convention if fitted else "nanogpt"
    fit_points = {s.id for g in fitted for s in g.points}

    def key(s: RunSummary):
        return f"{group_by}={group_value(s, group_by)}" if group_by else s.run.sweep
    x_of = {s.id: n_of(s, convention) for s in study}
    configs = [c for c in _configurations(study, key) if x_of.get(c.runs[0].id)]
    if not configs:
        return None
    for c in configs:
        c.params = x_of[c.runs[0].id]
    fig, ax = _fig(plt, 6, width=10.0, height=6.5)
    groups = sorted({c.group for c in configs})
    colors = dict(zip(groups, _colors(len(groups))))
    seeded = any(len(c.finished) > 1 for c in configs)
    ys: list[float] = []
    for g in groups:
        done = [c for c in configs if c.group == g and c.loss is not None]
        if not done:
            continue
        big = highlight_sweep is None or any(c.id.startswith(highlight_sweep + "/") for c in done)
        for c in done:
            seeds = [s.best_val for s in c.finished]
            ys += seeds + [c.loss.mean - (c.loss.sd or 0.0), c.loss.mean + (c.loss.sd or 0.0)]
            if len(seeds) > 1:
                ax.scatter([c.params] * len(seeds), seeds, s=22, facecolor="none",
                           edgecolor=colors[g], linewidth=0.9, zorder=2)
        off = [c for c in done if fitted and c.id not in fit_points
               and not any(s.id in fit_points for s in c.runs)]
        on = [c for c in done if c not in off]
        for cs, face, label in ((on, colors[g], g), (off, "white", None)):
            if cs:
                ax.errorbar([c.params for c in cs], [c.loss.mean for c in cs],
                            yerr=[c.loss.sd or 0.0 for c in cs], fmt="o", ms=9 if big else 7,
                            color=colors[g], mfc=face, mec="black", mew=0.8, capsize=4,
                            elinewidth=1.2, zorder=3, label=label if label else None)
    unf = [c for c in configs if c.loss is None]
    if unf:
        best = [min(s.best_val for s in c.runs) for c in unf]
        ys += best
        ax.scatter([c.params for c in unf], best, marker="x", s=70, color="grey", zorder=3,
                   label="not finished (best so far; not fitted)")
    if fitted and any(c.loss is not None and c.id not in fit_points
                      and not any(s.id in fit_points for s in c.runs) for c in configs):
        ax.scatter([], [], marker="o", s=60, facecolor="white", edgecolor="black",
                   label="not fitted (see the report)")
    if seeded:
        ax.scatter([], [], s=22, facecolor="none", edgecolor="grey", label="each seed")
    xs = [c.params for c in configs] + draw_fits(ax, fitted, several=len(fits) > 1)
    scale = _log_x(ax, xs)
    ax.set_yscale("log")
    lo, hi = min(ys), max(ys)
    pad = (hi / lo) ** 0.08 if hi > lo else 1.02
    ax.set_ylim(lo / pad, hi * pad)  # a band from resamples can reach far: keep the data in view
    ax.set_xlabel(f"parameters N ({convention} count, {scale})")
    ax.set_ylabel("best val loss (nats/token, log scale)")
    title = "Validation loss vs model size" + (" (mean ± sd over seeds)" if seeded else "")
    ax.set_title(title + ("" if fitted else "\n(no fit: see the report for why)"))
    _log_y_ticks(ax, [lo, hi])
    _legend(ax, n=len(groups) + 6, title=group_by or "sweep")
    save_png(fig, path, DPI)
    plt.close(fig)
    return path


def _log_y_ticks(ax, ys: list[float]) -> None:
    """Loss labels on a log y axis: evenly spaced in a narrow range, where the log locator
    would show only one or two."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    if max(ys) / min(ys) < 2:  # a narrow range: evenly spaced labels, else only 1-2 show
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0,
                                                             5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def diversity_vs_params(summaries: list[RunSummary], decoding: tuple | None, label: str,
                        path: Path) -> Path | None:
    """Diversity of each configuration's latest samples (mean ± sd over its finished
    seeds: one point per size, never a zigzag through the seeds) against parameters."""
    plt = _plt()
    if decoding is None:
        return None
    rows: list[tuple[int, dict[str, Stat]]] = []
    for c in _configurations([s for s in summaries if s.finished], lambda s: ""):
        scores = [d for d, n, _ in (diversity(s, decoding) for s in c.finished) if n]
        if scores:  # a running run's early samples would not compare: finished only
            rows.append((c.params, {k: st for k in DIVERSITY_NAMES
                                    if (st := Stat.of([d.get(k) for d in scores])) is not None}))
    if not rows:
        return None
    fig, ax = _fig(plt, 5, width=10.0, height=6.0)
    # Metrics that coincide on every configuration (word TTR is distinct-1; MATTR is TTR
    # for samples shorter than its window) are drawn once with one joint label; the others
    # are set a little apart on x, so no metric hides under another.
    lines: list[tuple[list[str], list[Stat]]] = []
    for k, name in DIVERSITY_NAMES.items():
        if not all(k in d for _, d in rows):
            continue
        stats = [d[k] for _, d in rows]
        for labels, other in lines:
            if all(abs(a.mean - b.mean) < 1e-9 for a, b in zip(stats, other)):
                labels.append(name)
                break
        else:
            lines.append(([name], stats))
    params = np.array([p for p, _ in rows], dtype=float)
    for j, ((labels, stats), m) in enumerate(zip(lines, "osD^v")):
        dodge = 1.0 + 0.015 * (j - (len(lines) - 1) / 2)
        ax.errorbar(params * dodge, [st.mean for st in stats], yerr=[st.sd or 0.0 for st in stats],
                    marker=m, ms=7, capsize=3, label=" = ".join(labels))
    scale = _log_x(ax, list(params))
    ax.set_xlabel(f"parameters N (nanoGPT count, {scale})")
    ax.set_ylabel("score (fraction, 0-1)")
    ax.set_ylim(-0.02, 1.02)
    seeded = any(st.n > 1 for _, d in rows for st in d.values())
    ax.set_title("Sample diversity vs model size" + (" (mean ± sd over seeds)" if seeded else "")
                 + f"\n({label})")
    _legend(ax, title="metric")
    save_png(fig, path, DPI)
    plt.close(fig)
    return path


DIVERSITY_NAMES = {"ttr": "TTR", "mattr": "MATTR", "distinct_1": "distinct-1",
                   "distinct_2": "distinct-2", "repetition_4": "repetition-4"}
