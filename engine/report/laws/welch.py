"""Is a difference between two configurations a finding? Welch's t-test over their seeds.

    compare_configs(a_values, b_values) -> Comparison

A finding means p < FINDING_P (two-sided), stated with the difference of the means and
its interval. With one seed on either side there is no spread to judge by: no finding.

Student's t CDF is computed here (numpy is the only numeric dependency): through the
regularized incomplete beta function, I_x(a, b), by its continued fraction (modified
Lentz's method, as in Numerical Recipes §6.4), accurate to ~1e-12 for the degrees of
freedom a few seeds give. The tests check it against scipy where scipy is installed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

FINDING_P = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with df degrees of freedom."""
    if not math.isfinite(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_ppf(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t, by bisection on t_sf2."""
    target = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf2(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Comparison:
    """b − a: the difference of the means over seeds, with Welch's test."""
    diff: float
    ci_low: float | None       # interval of the difference at `level`; None with one seed
    ci_high: float | None
    p: float | None            # two-sided p-value; None with one seed on either side
    df: float | None
    n_a: int
    n_b: int
    level: float = 0.95

    @property
    def finding(self) -> bool:
        return self.p is not None and self.p < FINDING_P

    def text(self) -> str:
        """'+0.0123 (95% interval −0.004 to +0.029, p = 0.14)' or the one-seed note."""
        if self.p is None:
            return f"{self.diff:+.4f} (one seed: no test possible)"
        return (f"{self.diff:+.4f} ({self.level:.0%} interval {self.ci_low:+.4f} to "
                f"{self.ci_high:+.4f}, p = {self.p:.2g})")

    def to_dict(self) -> dict:
        return {"diff": self.diff, "ci_low": self.ci_low, "ci_high": self.ci_high, "p": self.p,
                "df": self.df, "n_a": self.n_a, "n_b": self.n_b, "level": self.level,
                "finding": self.finding}


def compare_configs(a: list[float], b: list[float], level: float = 0.95) -> Comparison:
    """Welch's t-test of mean(b) − mean(a) over the seeds of two configurations."""
    a = [float(x) for x in a if x is not None and math.isfinite(x)]
    b = [float(x) for x in b if x is not None and math.isfinite(x)]
    if not a or not b:
        raise ValueError("compare_configs needs at least one value on each side")
    diff = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, None, None, None, len(a), len(b), level)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = va + vb
    if se2 == 0.0:  # identical seeds on both sides: any difference is exact
        p = 1.0 if diff == 0.0 else 0.0
        return Comparison(diff, diff, diff, p, math.inf, len(a), len(b), level)
    df = se2 * se2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    se = math.sqrt(se2)
    half = t_ppf(0.5 + level / 2.0, df) * se
    return Comparison(diff, diff - half, diff + half, t_sf2(diff / se, df), df,
                      len(a), len(b), level)
