"""From a study's runs to a law's points: which law, which points, and why others are out.

    study_points(members, options) -> Selection

N is the parameter count under the chosen convention (engine.model.arithmetic.
param_count, the one home of N); D the tokens trained; L the best val loss. With
`fit_points = "final"` a configuration is one point, its mean best val loss over its
finished seeds at the tokens it trained for; with "all" every eval of every finished seed
is a point (evals before WARMUP_SHARE of the run's tokens are left out: the start of
training is not what a scaling law describes) and a configuration's seeds and evals are
resampled together.

L(N, D) is used when the points differ in tokens trained in a way that is not a function
of size alone; otherwise L(N) over the best configuration at each size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.config import ConfigError
from engine.model.arithmetic import param_count
from engine.report.laws.fit import MIN_POINTS_ND
from engine.report.laws.result import LeftOut, Point

WARMUP_SHARE = 0.2


@dataclass(frozen=True)
class Selection:
    law: str
    points: tuple[Point, ...]
    left_out: tuple[LeftOut, ...]
    warnings: tuple[str, ...]


def n_of(s, convention: str) -> float | None:
    """A run's parameter count under `convention` (None when it cannot be known)."""
    if convention == "nanogpt" and s.params:
        return float(s.params)
    if s.config is None or s.vocab is None:
        return None
    try:
        return float(param_count(s.config, s.vocab, convention))
    except ConfigError:
        return None


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _tokens_at_best(s) -> float | None:
    """Tokens trained when the run reached its best val loss (its last eval unless it
    overfit): the D that goes with L = best val loss."""
    at = [r for r in s.evals if r.get("iter") == s.best_iter] or s.evals[-1:]
    return s.tokens_at(at[0]) if at else None


def _config_point(m, convention: str) -> Point:
    runs = m.finished
    return Point(f"{m.sweep}/{m.label}", n_of(runs[0], convention),
                 _mean([_tokens_at_best(s) for s in runs]), _mean([s.best_val for s in runs]),
                 f"{m.sweep}/{m.label}", m.still_improving)


def _eval_points(m, convention: str) -> tuple[list[Point], list[LeftOut]]:
    pts, out = [], []
    for s in m.finished:
        N = n_of(s, convention)
        last = s.tokens_at(s.evals[-1]) if s.evals else None
        early = 0
        for i, rec in enumerate(s.evals):
            D = s.tokens_at(rec)
            if D is None or last is None or D < WARMUP_SHARE * last or D <= 0:
                early += 1
                continue
            final = i == len(s.evals) - 1
            pts.append(Point(f"{s.run.id}@{rec.get('iter')}", N, D, float(rec["val_loss"]),
                             f"{m.sweep}/{m.label}",
                             final and len(s.evals) > 1 and s.best_iter == s.final_iter, final))
        if early:
            out.append(LeftOut(s.run.id, f"{early} eval(s) before {WARMUP_SHARE:.0%} of its "
                                         "tokens (the start of training is not what the law describes)"))
    return pts, out


def _separable(points: list[Point]) -> bool:
    """Whether log D is not a function of log N over the points (else D ∝ N^k and the
    law cannot tell data from size)."""
    if len({p.D for p in points}) < 2:
        return False
    X = np.array([[1.0, math.log(p.N), math.log(p.D)] for p in points])
    sv = np.linalg.svd(X - np.r_[0.0, X[:, 1:].mean(0)], compute_uv=False)
    return bool(sv[-1] > 1e-6 * sv[0])


def _best_per(points: list[Point], key) -> tuple[list[Point], list[LeftOut]]:
    best: dict = {}
    for p in points:
        k = key(p)
        if k not in best or p.loss < best[k].loss:
            best[k] = p
    kept = sorted(best.values(), key=lambda p: (p.N, p.D or 0, p.id))
    ids = {p.id for p in kept}
    return kept, [LeftOut(p.id, "another configuration of the same size"
                          + (" and tokens" if key(p) != p.N else "") + " did at least as well")
                  for p in points if p.id not in ids]


def study_points(members: list, convention: str, fit_points: str) -> Selection:
    """The law and its points over one group of comparable members (engine.report.course
    Member, one per distinct model)."""
    left: list[LeftOut] = []
    configs: list[Point] = []
    for m in members:
        if not m.finished:
            done = any(s.state == "done" for s in m.runs)
            left.append(LeftOut(f"{m.sweep}/{m.label}",
                                "no finite val loss recorded" if done else "not finished"))
            continue
        p = _config_point(m, convention)
        if p.N is None:
            left.append(LeftOut(p.id, f"parameter count ({convention}) unknown"))
        elif p.loss is None or not math.isfinite(p.loss):
            left.append(LeftOut(p.id, "loss missing or not finite"))
        else:
            configs.append(p)
    warnings: list[str] = []
    known_d = [p for p in configs if p.D]
    nd = len(known_d) == len(configs) and _separable(configs)
    if fit_points == "all":
        chosen, dup = _best_per(configs, lambda p: (p.N, p.D))
        by_id = {f"{m.sweep}/{m.label}": m for m in members}
        pts = []
        for c in chosen:
            ps, out = _eval_points(by_id[c.id], convention)
            pts += [p for p in ps if p.loss is not None and math.isfinite(p.loss)]
            left += out
        if len({p.D for p in pts}) > 1 and _separable(pts):
            return Selection("N,D", tuple(pts), tuple(left + dup), tuple(warnings))
        warnings.append("the evals do not separate tokens from size: L(N) over final points")
    if nd:
        chosen, dup = _best_per(configs, lambda p: (p.N, p.D))
        if len(chosen) >= MIN_POINTS_ND:
            return Selection("N,D", tuple(chosen), tuple(left + dup), tuple(warnings))
        warnings.append(f"the runs differ in tokens trained, but L(N, D) needs at least "
                        f"{MIN_POINTS_ND} points (there are {len(chosen)}); L(N) over the best "
                        "run at each size mixes size with training length")
    elif len({p.D for p in known_d}) > 1:
        warnings.append("the runs differ in tokens trained, but the tokens are a function of "
                        "size (D grows with N), so L(N, D) cannot tell data from size; L(N) "
                        "describes the loss at these horizons only")
    chosen, dup = _best_per(configs, lambda p: p.N)
    return Selection("N", tuple(chosen), tuple(left + dup), tuple(warnings))
