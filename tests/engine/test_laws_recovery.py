"""Recovery of known L(N, D) laws from noisy synthetic losses: the exponents' median error
and how often the stated 90% bootstrap interval covers the truth.

Run as a script to print the table in docs/report.md (more datasets, 1,000 resamples):
    PYTHONPATH=. python tests/engine/test_laws_recovery.py
"""

from __future__ import annotations

import math
import statistics
import sys

import numpy as np

from engine.report.laws import LawOptions, Point, fit_law

# (E, A, B, alpha, beta): Chinchilla's published law, and one with steeper exponents
LAWS = {"Chinchilla (1.69, 406.4, 410.7, 0.34, 0.28)": (1.69, 406.4, 410.7, 0.34, 0.28),
        "steeper (1.2, 900, 2000, 0.45, 0.40)": (1.2, 900.0, 2000.0, 0.45, 0.40)}
SIZES = np.geomspace(1e5, 1e7, 6)     # 6 sizes x 5 token counts = 30 runs
TOKENS = np.geomspace(3e6, 3e8, 5)


def synthetic(law, noise: float, seed: int) -> list[Point]:
    """One run per (N, D): loss from the law times exp(noise * standard normal)."""
    E, A, B, a, b = law
    rng = np.random.default_rng(seed)
    return [Point(f"n{i}d{j}", float(n), float(d),
                  (E + A * n ** -a + B * d ** -b) * math.exp(noise * rng.standard_normal()),
                  f"n{i}d{j}") for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]


def recovery(law, noise: float, datasets: int, n_boot: int) -> dict[str, float]:
    opt = LawOptions(n_boot=n_boot, holdout=0)
    err = {"alpha": [], "beta": []}
    width = []
    cover = {"alpha": 0, "beta": 0}
    truth = {"alpha": law[3], "beta": law[4]}
    for seed in range(datasets):
        f = fit_law(synthetic(law, noise, 1000 + seed), "N,D", opt)
        for k in err:
            p = f.params[k]
            err[k].append(abs(p.value - truth[k]) / truth[k])
            cover[k] += p.ci_low <= truth[k] <= p.ci_high
        width.append((f.params["alpha"].ci_high - f.params["alpha"].ci_low) / truth["alpha"])
    return {"alpha_err": statistics.median(err["alpha"]), "beta_err": statistics.median(err["beta"]),
            "alpha_cover": cover["alpha"] / datasets, "beta_cover": cover["beta"] / datasets,
            "alpha_width": statistics.median(width)}


def test_exponents_are_recovered_and_the_90_percent_interval_covers_near_nominal():
    r = recovery(LAWS["Chinchilla (1.69, 406.4, 410.7, 0.34, 0.28)"], 0.01, datasets=30, n_boot=150)
    assert r["alpha_err"] < 0.10 and r["beta_err"] < 0.10
    # 30 datasets: a binomial's standard deviation at 0.9 is 0.055; nominal is 0.9
    assert 0.75 <= r["alpha_cover"] <= 1.0 and 0.75 <= r["beta_cover"] <= 1.0
    # ... and not by being vacuous: the interval is a few times the typical error wide
    assert r["alpha_width"] < 6 * r["alpha_err"]


if __name__ == "__main__":
    datasets = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print("| law (E, A, B, α, β) | noise (log sd) | datasets | median abs. error of α | "
          "of β | 90% interval covers α | covers β | median width of α's interval |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, law in LAWS.items():
        for noise in (0.005, 0.02):
            r = recovery(law, noise, datasets, 1000)
            print(f"| {name} | {noise} | {datasets} | {r['alpha_err']:.1%} | {r['beta_err']:.1%} "
                  f"| {r['alpha_cover']:.0%} | {r['beta_cover']:.0%} | {r['alpha_width']:.1%} |",
                  flush=True)
