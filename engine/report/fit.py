"""Power-law fit of loss against model size: L(N) = E + A * N**(-alpha).

numpy only (no scipy): the model is linear in (E, A) once alpha is fixed, so we
profile alpha — for each alpha solve the 2-parameter least squares in closed form —
search alpha on a log grid, then refine the best bracket by golden-section search.
This has no starting-point sensitivity, which matters with 3-10 noisy points.
Standard errors come from the Jacobian at the optimum: cov = s^2 (J^T J)^-1 with
s^2 = SSE / (n - 3), so they need at least 4 points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from engine.errors import UserError

MIN_POINTS = 3
_ALPHA_LO, _ALPHA_HI = 1e-3, 3.0


class FitRefused(UserError, ValueError):
    """Not enough (or unusable) points for a fit; the message says why."""


@dataclass(frozen=True)
class PowerLawFit:
    E: float
    A: float
    alpha: float
    rmse: float            # root mean square residual, in loss units (nats/token)
    n_points: int
    se_E: float | None     # standard errors; None with fewer than 4 points
    se_A: float | None
    se_alpha: float | None
    r2: float | None       # coefficient of determination on the points

    @property
    def exact(self) -> bool:
        """3 points, 3 parameters and nothing constrained: the curve passes through them."""
        return self.n_points == 3 and self.rmse < 1e-9

    @property
    def warning(self) -> str:
        """Why α should not be read as a scaling exponent, or "" when nothing is wrong."""
        if self.A == 0.0:
            return ("the loss does not fall with size here, so the best fit is a flat line "
                    "(A = 0) and α means nothing")
        if self.alpha <= _ALPHA_LO * 1.01 or self.alpha >= _ALPHA_HI * 0.99:
            return (f"α ran into the edge of its search range [{_ALPHA_LO:g}, {_ALPHA_HI:g}]: "
                    "these losses do not follow E + A·N^(-α) (e.g. a larger model is not "
                    "better); do not read α as a scaling exponent")
        return ""

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        return self.E + self.A * np.asarray(n, dtype=float) ** (-self.alpha)

    def formula(self) -> str:
        return f"L(N) = {self.E:.4g} + {self.A:.4g}·N^(-{self.alpha:.4g})"

    def to_dict(self) -> dict:
        return {**asdict(self), "warning": self.warning}


def _solve_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y ≈ E + A x with E >= 0 and A >= 0; returns (E, A, SSE)."""
    X = np.stack([np.ones_like(x), x], axis=1)
    (E, A), *_ = np.linalg.lstsq(X, y, rcond=None)
    if E < 0:  # an irreducible loss below zero is meaningless: pin it at 0
        E = 0.0
        A = float(x @ y / (x @ x))
    if A < 0:  # loss growing with size: no power law; the flat line is the best we can say
        A, E = 0.0, float(y.mean())
    r = y - (E + A * x)
    return float(E), float(A), float(r @ r)


def fit_power_law(n_params, losses) -> PowerLawFit:
    """Fit L = E + A N^-alpha to (N, L) pairs. Raises FitRefused below MIN_POINTS
    distinct sizes or on non-finite/non-positive input."""
    N = np.asarray(n_params, dtype=float)
    L = np.asarray(losses, dtype=float)
    ok = np.isfinite(N) & np.isfinite(L) & (N > 0)
    N, L = N[ok], L[ok]
    if len(np.unique(N)) < MIN_POINTS:
        raise FitRefused(f"a power-law fit needs at least {MIN_POINTS} finished runs of "
                         f"different sizes; there are {len(np.unique(N))}")
    # Work with N / N0 (N0 the geometric mean) so N^-alpha stays near 1: better conditioned.
    logN0 = float(np.mean(np.log(N)))
    u = np.log(N) - logN0

    def sse(alpha: float) -> float:
        return _solve_linear(np.exp(-alpha * u), L)[2]

    grid = np.geomspace(_ALPHA_LO, _ALPHA_HI, 400)
    vals = np.array([sse(a) for a in grid])
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = sse(c), sse(d)
    for _ in range(100):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = sse(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = sse(d)
        if b - a < 1e-12 * max(1.0, b):
            break
    alpha = (a + b) / 2
    E, A_s, total = _solve_linear(np.exp(-alpha * u), L)
    n = len(L)
    rmse = math.sqrt(total / n)
    ss_tot = float(((L - L.mean()) ** 2).sum())
    r2 = 1 - total / ss_tot if ss_tot > 0 else None
    # Back to raw N: A_s (N/N0)^-alpha = A_s N0^alpha N^-alpha.
    A = A_s * math.exp(alpha * logN0)
    se_E = se_A = se_alpha = None
    if n > 3:
        x = np.exp(-alpha * u)
        J = np.stack([np.ones_like(x), x, -A_s * u * x], axis=1)  # d/dE, d/dA_s, d/dalpha
        s2 = total / (n - 3)
        try:
            cov = s2 * np.linalg.inv(J.T @ J)
            # Delta method for A = A_s exp(alpha logN0).
            g_A = np.array([0.0, math.exp(alpha * logN0), A * logN0])
            se_E = math.sqrt(max(cov[0, 0], 0.0))
            se_alpha = math.sqrt(max(cov[2, 2], 0.0))
            se_A = math.sqrt(max(float(g_A @ cov @ g_A), 0.0))
        except np.linalg.LinAlgError:
            pass  # singular: standard errors stay unknown rather than wrong
    return PowerLawFit(E=E, A=A, alpha=float(alpha), rmse=rmse, n_points=n,
                       se_E=se_E, se_A=se_A, se_alpha=se_alpha, r2=r2)
