"""What a fit returns: immutable, rendered alike by Markdown, PNG and --json.

A law's parameters each carry a value and a bootstrap interval at a stated level; the
points say which were used and which were left out with why; warnings are data.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.report.laws import solve


@dataclass(frozen=True)
class Param:
    value: float
    ci_low: float
    ci_high: float
    # False where every resample gave the same fit, so the bootstrap's (zero-width)
    # bounds say nothing about the uncertainty (fit_law's warnings say why)
    determined: bool = True

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def interval(self, fmt: str = ".4g", sep: str = " – ") -> str:
        """"lo – hi" as shown in reports, or "not determined"."""
        if not self.determined:
            return "not determined"
        return f"{self.ci_low:{fmt}}{sep}{self.ci_high:{fmt}}"


@dataclass(frozen=True)
class Point:
    """One (N, D, L) observation of one run or configuration; `group` is what a
    bootstrap resamples as a whole (a run with all its evals, a configuration with its
    seeds)."""
    id: str
    N: float | None
    D: float | None
    loss: float | None
    group: str
    still_improving: bool = False
    final: bool = True           # the run's last eval (not an intermediate one)


@dataclass(frozen=True)
class LeftOut:
    id: str
    why: str


@dataclass(frozen=True)
class HoldoutRow:
    id: str
    N: float
    D: float | None
    predicted: float
    pi_low: float
    pi_high: float
    actual: float
    still_improving: bool
    fitted_sizes: int            # how many of the smallest sizes the predicting fit used

    @property
    def error(self) -> float:
        """Actual minus predicted, nats/token (positive: worse than the law said)."""
        return self.actual - self.predicted

    @property
    def error_pct(self) -> float:
        return 100.0 * self.error / self.predicted

    @property
    def inside(self) -> bool:
        tol = 1e-9 * abs(self.predicted)  # an exact law gives a zero-width interval
        return self.pi_low - tol <= self.actual <= self.pi_high + tol

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "N": self.N, "D": self.D, "predicted": self.predicted,
                "pi_low": self.pi_low, "pi_high": self.pi_high, "actual": self.actual,
                "error": self.error, "error_pct": self.error_pct, "inside": self.inside,
                "still_improving": self.still_improving, "fitted_sizes": self.fitted_sizes}


@dataclass(frozen=True)
class LawFit:
    law: str                               # "N" or "N,D"
    convention: str                        # parameter-count convention of N
    fit_points: str                        # "final" or "all"
    params: dict[str, Param]               # E, A, alpha (and B, beta)
    level: float                           # of every interval
    n_boot: int
    seed: int
    delta: float                           # Huber δ on log loss
    rmse: float                            # root mean square residual, nats/token
    points: tuple[Point, ...]
    left_out: tuple[LeftOut, ...] = ()
    warnings: tuple[str, ...] = ()
    holdout: tuple[HoldoutRow, ...] = ()
    holdout_fit: "LawFit | None" = None    # the fit on all but the held-out sizes
    draws: np.ndarray = field(default=None, repr=False, compare=False)  # bootstrap params
    residuals: np.ndarray = field(default=None, repr=False, compare=False)  # log, fitted points

    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def n_sizes(self) -> int:
        return len({p.N for p in self.points})

    def vector(self) -> np.ndarray:
        keys = ("E", "A", "alpha") if self.law == "N" else ("E", "A", "B", "alpha", "beta")
        return np.array([self.params[k].value for k in keys])

    @property
    def E(self) -> float:
        return self.params["E"].value

    @property
    def A(self) -> float:
        return self.params["A"].value

    @property
    def alpha(self) -> float:
        return self.params["alpha"].value

    def predict(self, N, D=None) -> np.ndarray:
        return solve.predict(self.vector(), N, D)[0]

    def band(self, N, D=None, prediction: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The level-interval of the fitted curve over the bootstrap draws at N (and D);
        with prediction=True, of a new observation (each draw's curve times a resampled
        residual), which is what a held-out run is compared with."""
        preds = solve.predict(self.draws, N, D)
        if prediction and self.residuals is not None and len(self.residuals):
            rng = np.random.default_rng(self.seed + 1)
            # one residual per draw (not per x), so the band is a smooth curve
            preds = preds * np.exp(rng.choice(self.residuals, size=(preds.shape[0], 1)))
        q = 50 * (1 - self.level)
        lo, hi = np.nanpercentile(preds, [q, 100 - q], axis=0)
        return lo, hi

    def formula(self) -> str:
        p = self.params
        if self.law == "N":
            return f"L(N) = {p['E'].value:.4g} + {p['A'].value:.4g}·N^(-{p['alpha'].value:.4g})"
        return (f"L(N, D) = {p['E'].value:.4g} + {p['A'].value:.4g}/N^{p['alpha'].value:.4g}"
                f" + {p['B'].value:.4g}/D^{p['beta'].value:.4g}")

    @property
    def intervals_determined(self) -> bool:
        """Whether the bootstrap could vary the fit (Param.determined)."""
        return all(p.determined for p in self.params.values())

    def to_dict(self) -> dict[str, Any]:
        return {"law": self.law, "convention": self.convention, "fit_points": self.fit_points,
                "n_points": self.n_points, "n_sizes": self.n_sizes, "formula": self.formula(),
                "parameters": {k: v.to_dict() for k, v in self.params.items()},
                "intervals_determined": self.intervals_determined,
                "level": self.level, "bootstrap_resamples": self.n_boot, "seed": self.seed,
                "huber_delta": self.delta, "rmse": self.rmse,
                "points": [p.id for p in self.points],
                "left_out": [{"id": x.id, "why": x.why} for x in self.left_out],
                "warnings": list(self.warnings),
                "holdout": [h.to_dict() for h in self.holdout]}
