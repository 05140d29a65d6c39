"""Approach 2 of Chinchilla: IsoFLOP curves, a parabola in log N per compute budget, whose
minima give the compute-optimal size N_opt(C) and tokens D_opt(C), then the power laws
N_opt ∝ C^a and D_opt ∝ C^b and the tokens per parameter they imply.

    fit_isoflop(cells, IsoOptions) -> IsoFlopResult      (immutable; never raises for data)

Per budget: L = c2·x² + c1·x + c0 with x = ln N, least squares, over at least
MIN_SIZES sizes; N_opt = exp(−c1 / 2c2) when the parabola opens upwards. D at N_opt
comes from the budget's own cells (ln D is linear in ln N at fixed C: D = C / FLOPs per
token), so the FLOPs-per-token convention is the one the runs were trained with.
Intervals: a residual bootstrap (each draw adds resampled residuals, scaled by
sqrt(n / (n − 3)), to the fitted parabola and refits), since a budget has a handful of
sizes and resampling whole cells would often leave fewer than three. The exponents are
fitted to each draw's minima, so their intervals carry every budget's uncertainty. A
minimum outside the grid or at its smallest or largest size is an extrapolation: the
result warns and names the size to add (an off-centre grid biases Approach 2); one
beyond the grid is not reported as N_opt at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.report.laws.result import Param

MIN_SIZES = 3              # three coefficients in a parabola
CHINCHILLA_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class Cell:
    """One (budget, size) configuration: its mean final loss over seeds."""
    id: str
    C: float          # the budget, FLOPs
    N: float          # parameters under the report's convention
    D: float          # tokens trained
    loss: float


@dataclass(frozen=True)
class IsoOptions:
    level: float = 0.90
    n_boot: int = 1000
    seed: int = 0
    convention: str = "nanogpt"


@dataclass(frozen=True)
class BudgetFit:
    C: float
    cells: tuple[Cell, ...]
    N_opt: Param | None = None
    D_opt: Param | None = None
    loss_opt: float | None = None
    coeffs: tuple[float, float, float] | None = None   # c2, c1, c0 of L(ln N)
    note: str = ""                                      # why there is no minimum
    warning: str = ""                                   # a minimum at the grid's edge

    @property
    def tokens_per_param(self) -> float | None:
        return self.D_opt.value / self.N_opt.value if self.N_opt and self.D_opt else None

    def to_dict(self) -> dict[str, Any]:
        return {"C": self.C, "n_sizes": len(self.cells), "cells": [c.id for c in self.cells],
                "N_opt": self.N_opt.to_dict() if self.N_opt else None,
                "D_opt": self.D_opt.to_dict() if self.D_opt else None,
                "loss_opt": self.loss_opt, "tokens_per_param": self.tokens_per_param,
                "parabola": list(self.coeffs) if self.coeffs else None,
                "note": self.note, "warning": self.warning}


@dataclass(frozen=True)
class IsoFlopResult:
    budgets: tuple[BudgetFit, ...]
    a: Param | None                    # N_opt ∝ C^a
    b: Param | None                    # D_opt ∝ C^b
    tokens_per_param: Param | None     # D_opt / N_opt over the budgets' minima (geometric mean)
    level: float
    n_boot: int
    convention: str
    note: str = ""                     # why there is no frontier
    warnings: tuple[str, ...] = ()
    draws: np.ndarray = field(default=None, repr=False, compare=False)  # (boot, budget, 2): ln N_opt, ln D_opt

    @property
    def fitted(self) -> tuple[BudgetFit, ...]:
        return tuple(b for b in self.budgets if b.N_opt is not None)

    def frontier(self, C) -> tuple[np.ndarray, np.ndarray]:
        """N_opt and D_opt of the fitted power laws at budgets C."""
        lc = np.log(np.asarray(C, dtype=float))
        f = self.fitted
        x = np.log([b.C for b in f])
        kn = np.polyfit(x, np.log([b.N_opt.value for b in f]), 1)
        kd = np.polyfit(x, np.log([b.D_opt.value for b in f]), 1)
        return np.exp(np.polyval(kn, lc)), np.exp(np.polyval(kd, lc))

    def to_dict(self) -> dict[str, Any]:
        p = lambda x: x.to_dict() if x else None  # noqa: E731
        return {"approach": 2, "convention": self.convention, "level": self.level,
                "bootstrap_resamples": self.n_boot,
                "budgets": [b.to_dict() for b in self.budgets],
                "parameters": {"a": p(self.a), "b": p(self.b),
                               "tokens_per_param": p(self.tokens_per_param)},
                "chinchilla_tokens_per_param": CHINCHILLA_TOKENS_PER_PARAM,
                "note": self.note, "warnings": list(self.warnings)}


def _parabola(x: np.ndarray, L: np.ndarray) -> np.ndarray:
    return np.polyfit(x, L, 2)


def _vertex(c: np.ndarray) -> float:
    """ln N at the parabola's minimum; nan when it opens downwards or is flat."""
    return -c[1] / (2 * c[0]) if c[0] > 0 else math.nan


def _budget(C: float, cells: list[Cell], opt: IsoOptions, rng) -> tuple[BudgetFit, np.ndarray]:
    cells = sorted(cells, key=lambda c: c.N)
    nan = np.full((opt.n_boot, 2), np.nan)
    if len({c.N for c in cells}) < MIN_SIZES:
        return BudgetFit(C, tuple(cells), note=f"{len({c.N for c in cells})} finished sizes; a "
                         f"parabola needs at least {MIN_SIZES}"), nan
    x = np.log([c.N for c in cells])
    L = np.array([c.loss for c in cells])
    lD = np.polyfit(x, np.log([c.D for c in cells]), 1)   # ln D = lD0 ln N + lD1 at this C
    c = _parabola(x, L)
    v = _vertex(c)
    if not math.isfinite(v):
        return BudgetFit(C, tuple(cells), coeffs=tuple(map(float, c)),
                         note="the losses do not dip: the parabola opens downwards (no "
                              "minimum inside or near the grid)"), nan
    if not x[0] <= v <= x[-1]:
        side, add = (("smallest", "smaller") if v < x[0] else ("largest", "larger"))
        why = (f"the parabola's minimum (N = {math.exp(v):,.3g}) lies beyond the {side} size "
               f"of the grid: an extrapolation, not a measurement")
        return BudgetFit(C, tuple(cells), coeffs=tuple(map(float, c)), note=why,
                         warning=f"C = {C:.3g}: {why}; add a {add} size"), nan
    n, fitted = len(L), np.polyval(c, x)
    resid = (L - fitted) * (math.sqrt(n / (n - 3)) if n > 3 else 0.0)
    ys = fitted[None, :] + rng.choice(resid, size=(opt.n_boot, n))
    vs = np.array([_vertex(np.polyfit(x, y, 2)) for y in ys]) if opt.n_boot else np.zeros(0)
    draws = np.stack([vs, np.polyval(lD, vs)], axis=1) if opt.n_boot else nan
    q = 50 * (1 - opt.level)

    def param(center: float, col: np.ndarray) -> Param:
        ok = col[np.isfinite(col)]
        lo, hi = np.percentile(ok, [q, 100 - q]) if len(ok) else (math.nan, math.nan)
        return Param(float(math.exp(center)), float(math.exp(lo)), float(math.exp(hi)))

    N_opt = param(v, draws[:, 0])
    D_opt = param(float(np.polyval(lD, v)), draws[:, 1])
    warning = ""
    lo_n, hi_n = cells[0].N, cells[-1].N
    best = min(cells, key=lambda c: c.loss)
    if best is cells[0]:
        warning = (f"C = {C:.3g}: the minimum is at the smallest size of the grid "
                   f"(N = {lo_n:,.0f}; fitted N_opt = {N_opt.value:,.0f}): add a smaller size")
    elif best is cells[-1]:
        warning = (f"C = {C:.3g}: the minimum is at the largest size of the grid "
                   f"(N = {hi_n:,.0f}; fitted N_opt = {N_opt.value:,.0f}): add a larger size")
    bad = int(np.sum(~np.isfinite(vs)))
    if bad:
        warning += (("; " if warning else "") + f"C = {C:.3g}: {bad} of {opt.n_boot} resamples "
                    "had no minimum (left out of the interval)")
    return BudgetFit(C, tuple(cells), N_opt, D_opt, float(np.polyval(c, v)),
                     tuple(map(float, c)), "", warning), draws


def fit_isoflop(cells: list[Cell], opt: IsoOptions = IsoOptions()) -> IsoFlopResult:
    """One parabola per budget, then N_opt ∝ C^a and D_opt ∝ C^b over the budgets with a
    minimum (at least 2). Cells with a non-finite loss are ignored."""
    rng = np.random.default_rng(opt.seed)
    by_C: dict[float, list[Cell]] = {}
    for c in cells:
        if all(math.isfinite(v) and v > 0 for v in (c.C, c.N, c.D, c.loss)):
            by_C.setdefault(c.C, []).append(c)
    fits, draws = [], []
    for C in sorted(by_C):
        f, d = _budget(C, by_C[C], opt, rng)
        fits.append(f)
        draws.append(d)
    warnings = tuple(f.warning for f in fits if f.warning)
    base = dict(level=opt.level, n_boot=opt.n_boot, convention=opt.convention,
                warnings=warnings)
    good = [i for i, f in enumerate(fits) if f.N_opt is not None]
    if not fits:
        return IsoFlopResult((), None, None, None, note="no finished cells", **base)
    if len(good) < 2:
        why = "; ".join(f"C = {f.C:.3g}: {f.note}" for f in fits if f.note)
        return IsoFlopResult(tuple(fits), None, None, None,
                             note=f"{len(good)} budget(s) with a minimum; N_opt ∝ C^a needs "
                                  f"at least 2" + (f" ({why})" if why else ""), **base)
    x = np.log([fits[i].C for i in good])
    nd = np.stack([draws[i] for i in good], axis=1)      # (boot, budget, 2)
    q = 50 * (1 - opt.level)

    def slope(j: int, centre: list[float]) -> Param:
        value = float(np.polyfit(x, centre, 1)[0])
        ok = np.all(np.isfinite(nd[:, :, j]), axis=1)
        s = np.array([np.polyfit(x, row, 1)[0] for row in nd[ok, :, j]])
        lo, hi = np.percentile(s, [q, 100 - q]) if len(s) else (math.nan, math.nan)
        return Param(value, float(lo), float(hi))

    lN = [math.log(fits[i].N_opt.value) for i in good]
    lD = [math.log(fits[i].D_opt.value) for i in good]
    ratio = np.exp(np.mean(nd[:, :, 1] - nd[:, :, 0], axis=1))
    ratio = ratio[np.isfinite(ratio)]
    r_lo, r_hi = np.percentile(ratio, [q, 100 - q]) if len(ratio) else (math.nan, math.nan)
    tpp = Param(float(math.exp(np.mean(np.subtract(lD, lN)))), float(r_lo), float(r_hi))
    return IsoFlopResult(tuple(fits), slope(0, lN), slope(1, lD), tpp, draws=nd, **base)


def approach3_optimum(law, C: float, fpt_of_N, n_range: tuple[float, float]) -> float | None:
    """N minimising a fitted L(N, D) (engine.report.laws.LawFit) along the budget C,
    D = C / FLOPs per token(N): Approach 3's N_opt, searched on a log grid over n_range
    widened tenfold each way; None when the minimum is at that widened edge."""
    lo, hi = math.log(n_range[0] / 10), math.log(n_range[1] * 10)
    N = np.exp(np.linspace(lo, hi, 801))
    D = np.array([C / fpt_of_N(n) for n in N])
    L = law.predict(N, D)
    i = int(np.nanargmin(L))
    return None if i in (0, len(N) - 1) else float(N[i])
