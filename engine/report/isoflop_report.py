"""An IsoFLOP sweep's and a tuned sweep's sections of a report: the cells read from the
runs, Approach 2 (engine.report.laws.isoflop) beside Approach 3 (the sweep's L(N, D)),
their Markdown and their two figures; the best value of a tuned key against N.

    isoflop_study(summaries, options, law) -> IsoStudy | None   (None: not an IsoFLOP sweep)
    isoflop_markdown(study) / tuning_markdown(tuning) -> lines
    isoflop_figures(study, dir) -> [isoflop_curves.png, isoflop_frontier.png]
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ConfigError
from engine.report.course import label_of
from engine.report.laws import LawFit, LawOptions
from engine.report.laws.isoflop import (CHINCHILLA_TOKENS_PER_PARAM, Cell, IsoFlopResult,
                                        IsoOptions, approach3_optimum, fit_isoflop)
from engine.report.laws.points import n_of
from engine.report.summary import RunSummary
from engine.report.tuning import Tuning


@dataclass(frozen=True)
class IsoStudy:
    result: IsoFlopResult
    law: LawFit | None                   # Approach 3 over the same runs (the sweep's fit)
    approach3: tuple[tuple[float, float | None], ...]   # (C, N_opt by L(N, D))

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(),
                "approach3": {"law": self.law.law if self.law else None,
                              "N_opt": [{"C": c, "N_opt": n} for c, n in self.approach3]}}


def _is_isoflop(s: RunSummary) -> bool:
    try:
        return s.run.run_table().get("kind") == "isoflop"
    except (ConfigError, OSError):
        return False


def cells_of(summaries: list[RunSummary], convention: str) -> list[Cell]:
    """One cell per (budget, size) configuration: mean final val loss over its finished
    seeds, at the tokens it trained (its last eval)."""
    groups: dict[str, list[RunSummary]] = {}
    for s in summaries:
        if s.finished and s.config is not None and s.config.train_flops and s.evals:
            groups.setdefault(f"{s.run.sweep}/{label_of(s)}", []).append(s)
    out = []
    for cid, runs in groups.items():
        N = n_of(runs[0], convention)
        D = runs[0].tokens_at(runs[0].evals[-1])
        xs = [s.final_val for s in runs if s.final_val is not None and math.isfinite(s.final_val)]
        if N and D and xs:
            out.append(Cell(cid, float(runs[0].config.train_flops), N, D, statistics.fmean(xs)))
    return out


def isoflop_study(summaries: list[RunSummary], opt: LawOptions,
                  law: LawFit | None) -> IsoStudy | None:
    if not any(_is_isoflop(s) for s in summaries):
        return None
    cells = cells_of(summaries, opt.convention)
    res = fit_isoflop(cells, IsoOptions(opt.level, opt.n_boot, opt.seed, opt.convention))
    a3: list[tuple[float, float | None]] = []
    if law is not None and law.law == "N,D" and cells:
        # FLOPs per token as the runs had it (C / D), as a power of N over every cell
        k = np.polyfit(np.log([c.N for c in cells]), np.log([c.C / c.D for c in cells]), 1)
        span = (min(c.N for c in cells), max(c.N for c in cells))
        a3 = [(b.C, approach3_optimum(law, b.C, lambda n: math.exp(np.polyval(k, math.log(n))),
                                      span)) for b in res.budgets]
    return IsoStudy(res, law, tuple(a3))


def _n(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def isoflop_markdown(st: IsoStudy) -> list[str]:
    r = st.result
    lvl = f"{r.level:.0%}"
    out = ["## IsoFLOP: the compute-optimal size (Approach 2)", "",
           f"Each budget C's final val losses against ln N (N: {r.convention} parameters) "
           f"fitted with a parabola; its minimum is N_opt, D_opt the tokens at N_opt on "
           f"that budget. Intervals: {lvl}, residual bootstrap ({r.n_boot} resamples). "
           "Approach 3 is the L(N, D) law of the section above, minimised along each "
           "budget.", ""]
    a3 = dict(st.approach3)
    rows = ["| C (FLOPs) | sizes | N_opt [" + lvl + "] | D_opt | tokens/param | min loss | "
            "Approach 3 N_opt |", "|---|---|---|---|---|---|---|"]
    for b in r.budgets:
        if b.N_opt is None:
            rows.append(f"| {b.C:.3g} | {len(b.cells)} | no minimum: {b.note} | — | — | — | "
                        f"{_n(a3.get(b.C))} |")
            continue
        rows.append(f"| {b.C:.3g} | {len(b.cells)} | {_n(b.N_opt.value)} "
                    f"[{_n(b.N_opt.ci_low)}, {_n(b.N_opt.ci_high)}] | {_n(b.D_opt.value)} | "
                    f"{b.tokens_per_param:.3g} | {b.loss_opt:.4f} | {_n(a3.get(b.C))} |")
    out += rows + [""]
    if r.a is None:
        out += [f"No frontier: {r.note or 'no budget has a minimum'}.", ""]
    else:
        t = r.tokens_per_param
        out += [f"- N_opt ∝ C^a, a = {r.a.value:.3f} [{r.a.ci_low:.3f}, {r.a.ci_high:.3f}]; "
                f"D_opt ∝ C^b, b = {r.b.value:.3f} [{r.b.ci_low:.3f}, {r.b.ci_high:.3f}] "
                f"({lvl}; Chinchilla found a ≈ b ≈ 0.5).",
                f"- Tokens per parameter at the optimum: {t.value:.3g} [{t.ci_low:.3g}, "
                f"{t.ci_high:.3g}], against Chinchilla's ≈ {CHINCHILLA_TOKENS_PER_PARAM:g} "
                f"(a ratio that depends on the parameter convention: here {r.convention}).",
                f"- Exponents fitted over {len(r.fitted)} budgets with a minimum"
                + ("; few: treat them as indicative." if len(r.fitted) < 4 else ".")]
    if st.law is None or st.law.law != "N,D":
        out += ["- Approach 3: no L(N, D) fit over these runs (see the section above)."]
    out += [f"- Warning: {w}" for w in r.warnings]
    return out + [""]


def tuning_markdown(t: Tuning) -> list[str]:
    grid = ", ".join(f"{v:g}" for v in t.grid)
    out = [f"## Tuned `{t.key}`: the best value per configuration", "",
           f"Every configuration ran at {t.key} ∈ {{{grid}}}; each table, fit and frontier "
           f"of this report uses each configuration's best value (lowest final val loss, "
           f"mean over seeds). Final val loss per value:", ""]
    out += [f"| configuration | params | " + " | ".join(f"{v:g}" for v in t.grid) + " | best |",
            "|---|---|" + "---|" * len(t.grid) + "---|"]
    for c in t.configs:
        sc = {v: (s, n) for v, s, n in c.scores}
        cells = []
        for v in t.grid:
            s = sc.get(v, (None, 0))[0]
            cells.append("—" if s is None else (f"**{s:.4f}**" if v == c.best else f"{s:.4f}"))
        out.append(f"| {c.label} | {_n(c.params)} | " + " | ".join(cells)
                   + f" | {'—' if c.best is None else f'{c.best:g}'} |")
    out += ["", "Best value against N: " + "; ".join(
        f"N = {_n(c.params)}: {c.best:g}" for c in t.configs if c.best is not None) + ".", ""]
    out += [f"- Warning: {w}" for w in t.warnings]
    return out + [""]


def isoflop_figures(st: IsoStudy, d: Path) -> list[Path]:
    from engine.report.plots import DPI, _plt, ordered_colors
    r = st.result
    if not r.budgets:
        return []
    plt = _plt()
    colors = ordered_colors(len(r.budgets))
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    for b, col in zip(r.budgets, colors):
        N = np.array([c.N for c in b.cells])
        ax.plot(N, [c.loss for c in b.cells], "o", color=col, label=f"C = {b.C:.3g}")
        if b.coeffs:
            xs = np.linspace(np.log(N.min() / 1.5), np.log(N.max() * 1.5), 100)
            ax.plot(np.exp(xs), np.polyval(b.coeffs, xs), "-", color=col, alpha=0.7)
        if b.N_opt is not None:
            ax.errorbar([b.N_opt.value], [b.loss_opt], fmt="*", ms=16, color=col, mec="black",
                        xerr=[[b.N_opt.value - b.N_opt.ci_low], [b.N_opt.ci_high - b.N_opt.value]],
                        capsize=4)
    ax.set(xscale="log", xlabel=f"parameters N ({r.convention})", ylabel="final val loss",
           title=f"IsoFLOP curves (★ N_opt with its {r.level:.0%} interval)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    p1 = d / "isoflop_curves.png"
    fig.savefig(p1, dpi=DPI)
    plt.close(fig)
    f = r.fitted
    if not f:
        return [p1]
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    C = np.array([b.C for b in f])
    for key, mark, name, exp in (("N_opt", "o", "N_opt", r.a), ("D_opt", "s", "D_opt", r.b)):
        v = np.array([getattr(b, key).value for b in f])
        lo = np.array([getattr(b, key).ci_low for b in f])
        hi = np.array([getattr(b, key).ci_high for b in f])
        ax.errorbar(C, v, yerr=[v - lo, hi - v], fmt=mark, capsize=4, ms=8,
                    label=name + (f" ∝ C^{exp.value:.2f} [{exp.ci_low:.2f}, {exp.ci_high:.2f}]"
                                  if exp else ""))
    a3 = [(c, n) for c, n in st.approach3 if n is not None]
    if a3:
        ax.plot([c for c, _ in a3], [n for _, n in a3], "x", color="black", ms=10, mew=2,
                label="N_opt by Approach 3 (L(N, D))")
    if r.a is not None:
        cc = np.geomspace(C.min() / 1.5, C.max() * 1.5, 50)
        n, dd = r.frontier(cc)
        ax.plot(cc, n, "-", color="C0", alpha=0.6)
        ax.plot(cc, dd, "-", color="C1", alpha=0.6)
        ax.plot(cc, CHINCHILLA_TOKENS_PER_PARAM * n, ":", color="grey",
                label=f"D = {CHINCHILLA_TOKENS_PER_PARAM:g}·N_opt (Chinchilla)")
    ax.set(xscale="log", yscale="log", xlabel="compute budget C (FLOPs)",
           ylabel="N_opt (parameters), D_opt (tokens)", title="Compute-optimal frontier")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    p2 = d / "isoflop_frontier.png"
    fig.savefig(p2, dpi=DPI)
    plt.close(fig)
    return [p1, p2]
