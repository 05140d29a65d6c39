"""Drawing a fitted law on the loss-vs-size axes: the curve, its bootstrap band, the
held-out fit's extrapolation past its last fitted size, and the held-out runs marked.

L(N, D) is drawn against N at one D: the tokens most of its points trained for (the
legend says which), since a curve in N needs a D."""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.report.laws import LawFit


def _tex_num(x: float) -> str:
    """3 significant digits; large or small numbers as mantissa×10^k (no "e+03")."""
    if x == 0 or 1e-2 <= abs(x) < 1e3:
        return f"{x:.3g}"
    k = int(np.floor(np.log10(abs(x))))
    return f"{x / 10 ** k:.3g}×10$^{{{k}}}$"


def curve_d(fit: LawFit) -> float | None:
    """The D at which an L(N, D) law is drawn against N: the most common among its points."""
    if fit.law != "N,D":
        return None
    counts = Counter(p.D for p in fit.points if p.final)
    return max(counts, key=lambda d: (counts[d], d))


def label(fit: LawFit, name: str) -> str:
    p = fit.params
    a = p["alpha"]
    if fit.law == "N":
        head = f"{name}: {p['E'].value:.3g} + {_tex_num(p['A'].value)}·N$^{{-{a.value:.3g}}}$"
    else:
        head = (f"{name}: L(N, D) at D = {_tex_num(curve_d(fit))} tokens")
    interval = (f"[{a.interval('.3g', ', ')}] ({fit.level:.0%})" if a.determined
                else "(interval not determined)")
    return (head + f"\nα = {a.value:.3g} {interval}, RMSE {fit.rmse:.2g}"
            + ("\n(warnings: see report)" if fit.warnings else ""))


def draw_fits(ax, groups: list, several: bool) -> list[float]:
    """Each group's law (black), its band (grey), the held-out fit (dashed, red) reaching
    past its fitted sizes, and held-out runs ringed in red. Returns the x values drawn."""
    xs: list[float] = []
    for g, ls in zip(groups, ("-", "--", "-.", ":")):
        fit: LawFit = g.fit
        D = curve_d(fit)
        n = np.array([p.N for p in fit.points], dtype=float)
        grid = np.geomspace(n.min(), n.max(), 120)  # beyond the data a steep law shoots off
        Dg = None if D is None else np.full_like(grid, D)
        name = f"fit ({g.label})" if several else "fit"
        ax.plot(grid, fit.predict(grid, Dg), color="black", lw=1.8, ls=ls, zorder=2,
                label=label(fit, name))
        if D is not None:  # the law at the other horizons its points trained for
            others = sorted({p.D for p in fit.points if p.final} - {D})[-4:]
            for i, d in enumerate(others):
                ax.plot(grid, fit.predict(grid, np.full_like(grid, d)), color="grey", lw=1.0,
                        ls=ls, zorder=1, label="the law at the other D of its points" if i == 0 else None)
        if fit.intervals_determined:  # else every resample gave this curve: no band to draw
            lo, hi = fit.band(grid, Dg)
            ax.fill_between(grid, lo, hi, color="grey", alpha=0.25, lw=0, zorder=1,
                            label=f"{fit.level:.0%} band of the fit (bootstrap, "
                                  f"{fit.n_boot} resamples)")
        xs += [grid.min(), grid.max()]
        sub = fit.holdout_fit
        if sub is not None and fit.holdout:
            big = max(h.N for h in fit.holdout)
            small = np.array([p.N for p in sub.points], dtype=float)
            ext = np.geomspace(small.min(), big * 1.3, 120)
            De = None if D is None else np.full_like(ext, D)
            ax.plot(ext, sub.predict(ext, De), color="tab:red", lw=1.4, ls="--", zorder=2,
                    label=f"fit on the {sub.n_sizes} smaller sizes, extrapolated")
            elo, ehi = sub.band(ext, De, prediction=True)
            past = ext >= small.max()
            ax.fill_between(ext[past], elo[past], ehi[past], color="tab:red", alpha=0.12, lw=0,
                            zorder=1, label=f"its {fit.level:.0%} prediction interval")
            ax.scatter([h.N for h in fit.holdout], [h.actual for h in fit.holdout], s=220,
                       facecolor="none", edgecolor="tab:red", linewidth=2.0, zorder=4,
                       label="held out (not in that fit)")
            ax.errorbar([h.N for h in fit.holdout], [h.predicted for h in fit.holdout],
                        yerr=[[h.predicted - h.pi_low for h in fit.holdout],
                              [h.pi_high - h.predicted for h in fit.holdout]],
                        fmt="_", color="tab:red", capsize=5, zorder=4)
            xs += [ext.max()]
        if not several and fit.params["E"].value > 0:
            ax.axhline(fit.params["E"].value, color="black", ls=":", lw=1.2,
                       label=f"E = {fit.params['E'].value:.3g} (irreducible)")
    return xs
