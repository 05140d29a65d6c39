"""The law while a sweep trains: fitted on its finished runs, it says what a larger running
run should reach at its horizon and whether the run is tracking that.

    fit_sweep(runs_root, sweep) -> LiveLaw | None           (reads run directories: call it
                                                              from a worker thread)
    expect(live, reading, tokens_per_iter, tokens_now, val_now) -> Expectation | None

Only runs larger than every fitted one get an expectation: inside the fitted range the
law is a description, not a prediction. Fewer bootstrap resamples than a report (the
band is redrawn as runs finish), stated in LIVE_BOOT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.report.laws.fit import FitRefused, LawOptions, fit_law
from engine.report.laws.points import study_points
from engine.report.laws.result import LawFit

LIVE_BOOT = 200


@dataclass(frozen=True)
class LiveLaw:
    sweep: str
    fit: LawFit
    finished: int            # finished runs it was fitted on (refit when this changes)

    @property
    def max_n(self) -> float:
        return max(p.N for p in self.fit.points)


@dataclass(frozen=True)
class Expectation:
    """What the law expects of one running run."""
    predicted: float         # final val loss at the run's horizon
    pi_low: float
    pi_high: float
    horizon_iter: int
    horizon_tokens: float
    verdict: str             # "on track", "above the law's band", "judged at the horizon"

    def text(self) -> str:
        return (f"law: {self.predicted:.3f} [{self.pi_low:.3f}, {self.pi_high:.3f}] at iter "
                f"{self.horizon_iter} · {self.verdict}")


def fit_sweep(runs_root: Path, sweep: str, n_boot: int = LIVE_BOOT) -> LiveLaw | None:
    """The law over the sweep's finished runs (seeds pooled), or None when there is none."""
    from engine.report.course import build_study
    from engine.report.summary import summarize
    from engine.runs import list_runs

    runs = [r for r in list_runs(Path(runs_root)) if r.sweep == sweep]
    summaries = [summarize(r, Path(runs_root)) for r in runs]
    done = sum(s.finished for s in summaries)
    if done < 3:
        return None
    study = build_study({sweep: summaries})
    members = [m.members[0] for m in study.models]
    sel = study_points(members, "nanogpt", "final")
    try:
        fit = fit_law(list(sel.points), sel.law, LawOptions(n_boot=n_boot, holdout=0),
                      sel.left_out, sel.warnings)
    except FitRefused:
        return None
    return LiveLaw(sweep, fit, done)


def expect(live: LiveLaw, params: int | None, max_iters: int | None, tokens_per_iter: int,
           tokens_now: float | None, val_now: float | None) -> Expectation | None:
    """The law's final val loss for a run of `params` trained `max_iters` iterations, and
    whether its latest val loss is tracking it; None for a run inside the fitted range."""
    if not params or not max_iters or params <= live.max_n:
        return None
    fit = live.fit
    D_end = float(max_iters * tokens_per_iter)
    N = np.array([float(params)])
    Dv = None if fit.law == "N" else np.array([D_end])
    pred = float(fit.predict(N, Dv)[0])
    lo, hi = (float(v[0]) for v in fit.band(N, Dv, prediction=True))
    verdict = "no eval yet"
    if val_now is not None:
        if fit.law == "N,D" and tokens_now:
            # the law at the tokens seen so far: a fair comparison mid-run
            _, hi_now = fit.band(N, np.array([float(tokens_now)]), prediction=True)
            above = val_now > float(hi_now[0])
            verdict = "above the law's band" if above else "on track"
        elif (tokens_now or 0) >= D_end:
            verdict = "above the law's band" if val_now > hi else "on track"
        else:
            verdict = "judged at the horizon"  # L(N) speaks of the final loss only
    return Expectation(pred, lo, hi, int(max_iters), D_end, verdict)
