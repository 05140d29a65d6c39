"""Fitting a law to points: the estimate, bootstrap intervals, warnings, held-out checks.

    fit_law(points, "N" | "N,D", options) -> LawFit      (raises FitRefused)

The estimate and every bootstrap resample go through one solver (engine.report.laws.
solve), so an interval describes the estimator as used. A resample draws whole groups
(a run with all its evals, or a configuration with its seeds) with replacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from engine.errors import UserError
from engine.report.laws import solve
from engine.report.laws.result import HoldoutRow, LawFit, LeftOut, Param, Point

MIN_SIZES = 3           # 3 parameters in L(N); α needs three sizes in L(N, D) too
MIN_POINTS_ND = 6       # 5 parameters in L(N, D), and one point to spare
HOLDOUT_MIN_SIZES = 5   # the default held-out check needs 4 sizes left to fit on


class FitRefused(UserError, ValueError):
    """Not enough (or unusable) points for a fit; the message says why."""


@dataclass(frozen=True)
class LawOptions:
    """How the report fits: stated in its methods and carried by every LawFit."""
    fit_points: str = "final"      # "final": one point per configuration; "all": every eval
    convention: str = "nanogpt"    # parameter-count convention of N
    level: float = 0.90            # of every interval
    n_boot: int = 1000             # bootstrap resamples per fit
    seed: int = 0                  # of the bootstrap
    holdout: int = 1               # largest sizes held out (with >= HOLDOUT_MIN_SIZES sizes)
    rollout: bool = False          # also fit on the k smallest sizes, k = 3 .. n-1
    delta: float = solve.HUBER_DELTA

    def to_dict(self) -> dict:
        return {"fit_points": self.fit_points, "convention": self.convention,
                "level": self.level, "bootstrap_resamples": self.n_boot, "seed": self.seed,
                "holdout": self.holdout, "rollout": self.rollout, "huber_delta": self.delta}


def usable(points: list[Point], law: str) -> tuple[list[Point], list[LeftOut]]:
    """The points a law can use; the others with why."""
    keep, out = [], []
    for p in points:
        if p.N is None or not math.isfinite(p.N) or p.N <= 0:
            out.append(LeftOut(p.id, "parameter count unknown"))
        elif p.loss is None or not math.isfinite(p.loss) or p.loss <= 0:
            out.append(LeftOut(p.id, "loss missing or not a positive number"))
        elif law == "N,D" and (p.D is None or not math.isfinite(p.D) or p.D <= 0):
            out.append(LeftOut(p.id, "tokens trained unknown"))
        else:
            keep.append(p)
    return keep, out


def _check(points: list[Point], law: str) -> None:
    sizes = len({p.N for p in points})
    if sizes < MIN_SIZES:
        what = ("all usable runs have the same parameter count" if sizes == 1
                else f"there are {sizes}")
        raise FitRefused(f"a law needs finished runs of at least {MIN_SIZES} different sizes; {what}")
    if law == "N,D" and len(points) < MIN_POINTS_ND:
        raise FitRefused(f"L(N, D) has 5 parameters and needs at least {MIN_POINTS_ND} points; "
                         f"there are {len(points)}")


def _bootstrap_weights(points: list[Point], n_boot: int, seed: int) -> np.ndarray:
    groups = sorted({p.group for p in points})
    idx = np.array([groups.index(p.group) for p in points])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_boot)
    return counts[:, idx].astype(float)


def _identified(W: np.ndarray, N: np.ndarray, D: np.ndarray | None) -> np.ndarray:
    """Resamples that draw at least MIN_SIZES sizes (and, for L(N, D), 2 token counts and
    MIN_POINTS_ND - 1 distinct points): with fewer, many laws fit equally well."""
    drawn = W > 0
    sizes = (drawn @ (np.unique(N)[:, None] == N[None, :]).T.astype(float) > 0).sum(1)
    ok = sizes >= MIN_SIZES
    if D is not None:
        tokens = (drawn @ (np.unique(D)[:, None] == D[None, :]).T.astype(float) > 0).sum(1)
        ok &= (tokens >= 2) & (drawn.sum(1) >= MIN_POINTS_ND - 1)
    return ok


def _arrays(points: list[Point], law: str):
    N = np.array([p.N for p in points], dtype=float)
    D = np.array([p.D for p in points], dtype=float) if law == "N,D" else None
    L = np.array([p.loss for p in points], dtype=float)
    return N, D, L


def _warnings(est: np.ndarray, law: str, n_sizes: int) -> list[str]:
    names = ("E", "A", "α") if law == "N" else ("E", "A", "B", "α", "β")
    out = []
    for name, v in zip(names, est):
        if name in ("α", "β"):
            if v <= solve.EXP_LO * 1.01 or v >= solve.EXP_HI * 0.99:
                out.append(f"{name} = {v:.3g} sits at a bound of its range [{solve.EXP_LO:g}, "
                           f"{solve.EXP_HI:g}]: these losses do not follow the law; do not "
                           f"read {name} as a scaling exponent")
        elif v <= 0.0:
            what = {"E": "the irreducible loss", "A": "the size term", "B": "the data term"}[name]
            out.append(f"{name} sits at its bound 0 ({what} vanishes)"
                       + ("; the exponent α means nothing then" if name == "A" else "")
                       + ("; the exponent β means nothing then" if name == "B" else ""))
    if n_sizes < 5:
        out.append(f"only {n_sizes} sizes: the exponent is poorly constrained, treat it as "
                   "indicative")
    return out


def fit_law(points: list[Point], law: str, opt: LawOptions = LawOptions(),
            left_out: tuple[LeftOut, ...] = (), warnings: tuple[str, ...] = ()) -> LawFit:
    """Fit `law` ("N": E + A·N^-α; "N,D": E + A/N^α + B/D^β) to the points.
    Raises FitRefused when too few usable points remain or the loss does not fall."""
    pts, bad = usable(points, law)
    _check(pts, law)
    N, D, L = _arrays(pts, law)
    est = solve.solve(N, D, L, np.ones((1, len(L))), opt.delta)[0]
    if est[1] <= 0.0 and (law == "N" or est[2] <= 0.0):
        raise FitRefused("the loss does not fall with size here (the best fit is flat, "
                         "A = 0): there is no power law to fit")
    W = _bootstrap_weights(pts, opt.n_boot, opt.seed)
    ok = _identified(W, N, D)
    draws = solve.solve(N, D, L, W[ok], opt.delta) if ok.any() else est[None, :]
    boot_notes = []
    if opt.n_boot and ok.sum() < opt.n_boot:
        boot_notes.append(f"{opt.n_boot - int(ok.sum())} of {opt.n_boot} bootstrap resamples "
                          f"drew fewer than {MIN_SIZES} sizes"
                          + (" or 2 token counts" if law == "N,D" else "")
                          + " and were set aside (the law is not determined by them)")
    keys = ("E", "A", "alpha") if law == "N" else ("E", "A", "B", "alpha", "beta")
    for k, col in zip(keys, draws.T):
        at = float(np.mean((col <= solve.EXP_LO * 1.01) | (col >= solve.EXP_HI * 0.99)))
        if k in ("alpha", "beta") and at > 0.05 and len(draws) > 1:
            boot_notes.append(f"{'α' if k == 'alpha' else 'β'} sat at a bound of its range in "
                              f"{at:.0%} of the resamples, so its interval reaches that bound: "
                              "the points do not pin it down")
    q = 50 * (1 - opt.level)
    lo, hi = np.nanpercentile(draws, [q, 100 - q], axis=0)
    # every resample that determines the law may hold each point once (three sizes, one
    # point each): the same fit each time, and its zero-width interval would claim a
    # certainty the data do not give
    determined = not (opt.n_boot and (not ok.any() or np.all(W[ok] == W[ok][:1])))
    if not determined:
        boot_notes.append(f"every bootstrap resample that determines the law holds the same "
                          f"{len(L)} points, so the bootstrap gives no interval: more sizes "
                          f"(or seeds) are needed for one")
    params = {k: Param(float(v), float(a), float(b), determined)
              for k, v, a, b in zip(keys, est, lo, hi)}
    pred = solve.predict(est, N, D)[0]
    # residuals of a fit are smaller than the noise by about sqrt((n - k) / n) (k fitted
    # parameters); scaled back so a prediction interval is not too narrow with few points
    k = len(keys)
    resid = (np.log(L) - np.log(pred)) * (math.sqrt(len(L) / (len(L) - k)) if len(L) > k else 1.0)
    fit = LawFit(law=law, convention=opt.convention, fit_points=opt.fit_points, params=params,
                 level=opt.level, n_boot=opt.n_boot, seed=opt.seed, delta=opt.delta,
                 rmse=float(np.sqrt(np.mean((L - pred) ** 2))), points=tuple(pts),
                 left_out=tuple(left_out) + tuple(bad),
                 warnings=tuple(warnings) + tuple(_warnings(est, law, len(set(N)))) + tuple(boot_notes),
                 draws=draws, residuals=resid)
    return _with_holdout(fit, opt) if opt.holdout > 0 or opt.rollout else fit


def _predict_rows(sub: LawFit, held: list[Point], k: int) -> list[HoldoutRow]:
    final = [p for p in held if p.final]
    if not final:
        return []
    N = np.array([p.N for p in final])
    D = np.array([p.D for p in final]) if sub.law == "N,D" else None
    pred = sub.predict(N, D)
    lo, hi = sub.band(N, D, prediction=True)
    return [HoldoutRow(p.id, p.N, p.D, float(m), float(a), float(b), p.loss,
                       p.still_improving, k) for p, m, a, b in zip(final, pred, lo, hi)]


def _with_holdout(fit: LawFit, opt: LawOptions) -> LawFit:
    """The same law on all but the largest `holdout` sizes, predicting them (and with
    rollout, on the k smallest sizes for k = 3 .. n-1, each predicting the larger ones)."""
    sizes = sorted({p.N for p in fit.points})
    inner = replace(opt, holdout=0, rollout=False)
    rows: list[HoldoutRow] = []
    notes: list[str] = []
    sub_fit = None
    K = opt.holdout
    if K > 0:
        if len(sizes) < HOLDOUT_MIN_SIZES or len(sizes) - K < MIN_SIZES:
            notes.append(f"no held-out prediction: it needs at least {max(HOLDOUT_MIN_SIZES, K + MIN_SIZES)} "
                         f"sizes (fit on all but the largest {K}); there are {len(sizes)}")
        else:
            cut = sizes[-K]
            try:
                sub_fit = fit_law([p for p in fit.points if p.N < cut], fit.law, inner)
                rows += _predict_rows(sub_fit, [p for p in fit.points if p.N >= cut], len(sizes) - K)
            except FitRefused as e:
                notes.append(f"no held-out prediction: on all but the largest {K} sizes, {e}")
    if opt.rollout:
        for k in range(MIN_SIZES, len(sizes)):
            if K > 0 and k == len(sizes) - K and sub_fit is not None:
                continue  # the held-out fit above is this rung
            try:
                sub = fit_law([p for p in fit.points if p.N <= sizes[k - 1]], fit.law, inner)
            except FitRefused as e:
                notes.append(f"rollout on the {k} smallest sizes: {e}")
                continue
            rows += _predict_rows(sub, [p for p in fit.points if p.N > sizes[k - 1]], k)
    rows.sort(key=lambda r: (r.fitted_sizes, r.N, r.id))
    return replace(fit, holdout=tuple(rows), holdout_fit=sub_fit,
                   warnings=fit.warnings + tuple(notes))
