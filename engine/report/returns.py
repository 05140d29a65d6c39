"""Returns to size, as one sentence every report uses: the val-loss gain per doubling of
parameters between neighbouring configurations, each configuration's number being its
mean best val loss over its finished seeds, and where returns stop, stated only for a
step that is a finding (engine.report.course.is_finding, Welch's t-test over the seeds,
p < 0.05): a change that is not a finding is said to be one, never read as a trend.
"""

from __future__ import annotations

import math

from engine.report.course import Member, compare
from engine.report.laws.welch import FINDING_P
from engine.report.tables import fmt

DIMINISHING_PCT = 2.0  # below this % val-loss gain per doubling of parameters: diminishing

RETURNS_METHOD = (
    "Diminishing returns: for successive parameter counts N1 < N2 (at each, the "
    "configuration with the lowest mean best val loss over its finished seeds), gain per "
    "doubling = (L1 − L2) / L1 / log2(N2 / N1) × 100%, with L that mean; below "
    f"{DIMINISHING_PCT:g}% per doubling counts as diminishing, and a step that is not a "
    f"finding (Welch's t-test over the seeds, p < {FINDING_P:g}; with one seed nothing is a "
    "finding) is called no finding, never a trend.")


def returns_to_size(members: list[Member], threshold_pct: float = DIMINISHING_PCT) -> str:
    """One sentence on how the mean best val loss moves with the parameter count."""
    best: dict[int, Member] = {}  # per size, the configuration with the lowest mean
    for m in members:
        if m.params and m.best_val is not None:
            if m.params not in best or m.best_val.mean < best[m.params].best_val.mean:
                best[m.params] = m
    sizes = sorted(best)
    if len(sizes) < 2:
        return ("Size does not vary among the finished runs, so there are no returns to "
                "size to measure.")
    seeded = any(len(m.finished) > 1 for m in best.values())
    steps, stop = [], None
    for a, b in zip(sizes, sizes[1:]):
        sa, sb = best[a].best_val, best[b].best_val
        gain = (sa.mean - sb.mean) / sa.mean / math.log2(b / a) * 100
        c = compare(sa, sb)
        found = c.finding
        why = ("" if found or c.p is None else f" (p = {c.p:.2g}: not a finding)")
        steps.append(f"{best[a].label} → {best[b].label}: {gain:+.1f}%" + why)
        if stop is None and (not found or gain < threshold_pct):
            stop = (a, b, gain, found)
    of = ("mean over seeds" if seeded else "one seed each, so no step can be called a finding")
    text = f"Val-loss gain per doubling of parameters ({of}): " + "; ".join(steps) + ". "
    if not seeded:
        return text + ("With one seed per size no change can be called a finding, so these "
                       "are single measurements, not returns to size (`seeds = 3` measures "
                       "the spread).")
    if stop is None:
        return text + (f"Every step gains at least {threshold_pct:g}% per doubling: no sign "
                       "of saturation within this sweep.")
    a, b, gain, found = stop
    loss = "mean best val loss"
    if not found:
        return text + (f"From {best[a].label} ({fmt(a, 'int')} params) to {best[b].label} "
                       f"({fmt(b, 'int')} params) the change is not a finding: no measurable "
                       "return to size there at this budget.")
    change = (f"gains only {gain:.1f}% per doubling, below {threshold_pct:g}%" if gain >= 0 else
              f"makes the {loss} worse ({gain:.1f}% per doubling)")
    return text + (f"Returns diminish beyond {best[a].label} ({fmt(a, 'int')} params): going "
                   f"to {best[b].label} ({fmt(b, 'int')} params) {change}.")

