"""Scaling laws (engine.report.laws): known laws recovered, intervals that mean something,
held-out predictions that catch a broken model, refusals that say why, Welch's test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.report.laws import FitRefused, LawOptions, Point, compare_configs, fit_law
from engine.report.laws.welch import betainc, t_ppf, t_sf2

N = np.geomspace(1e5, 1e8, 10)  # three decades of model size, 10 runs
FAST = LawOptions(n_boot=200, holdout=0)


def n_points(losses, Ns=N, still=()) -> list[Point]:
    return [Point(f"r{i}", float(n), None, v if v is None else float(v), f"r{i}", i in still)
            for i, (n, v) in enumerate(zip(Ns, losses))]


def nd_points(E, A, B, alpha, beta, noise, seed, Ns=np.geomspace(1e5, 1e7, 6),
              Ds=np.geomspace(1e7, 1e9, 5)) -> list[Point]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(Ns):
        for j, d in enumerate(Ds):
            L = (E + A * n ** -alpha + B * d ** -beta) * math.exp(noise * rng.standard_normal())
            out.append(Point(f"n{i}d{j}", float(n), float(d), L, f"n{i}d{j}"))
    return out


@pytest.mark.parametrize("E,A,alpha", [(1.6, 120.0, 0.32), (0.0, 30.0, 0.076),
                                       (2.0, 400.0, 0.5), (1.2, 8.0, 0.15)])
def test_exact_losses_recover_every_parameter_of_L_N(E, A, alpha):
    f = fit_law(n_points(E + A * N ** -alpha), "N", FAST)
    assert f.alpha == pytest.approx(alpha, rel=1e-4)
    assert f.E == pytest.approx(E, abs=1e-4)
    assert f.A == pytest.approx(A, rel=1e-3)
    assert f.rmse < 1e-7
    assert f.to_dict()["law"] == "N" and f.to_dict()["n_points"] == 10


def test_exact_losses_recover_every_parameter_of_L_N_D():
    f = fit_law(nd_points(1.7, 400.0, 410.0, 0.34, 0.28, 0.0, 0), "N,D", FAST)
    got = {k: p.value for k, p in f.params.items()}
    assert got["alpha"] == pytest.approx(0.34, rel=1e-3)
    assert got["beta"] == pytest.approx(0.28, rel=1e-3)
    assert got["E"] == pytest.approx(1.7, rel=1e-3)
    assert got["B"] == pytest.approx(410.0, rel=1e-2)


def test_every_parameter_has_an_interval_around_it_and_the_seed_fixes_it():
    pts = nd_points(1.7, 400.0, 410.0, 0.34, 0.28, 0.01, 3)
    a, b = fit_law(pts, "N,D", FAST), fit_law(pts, "N,D", FAST)
    for k, p in a.params.items():
        assert p.ci_low <= p.value <= p.ci_high, k
        assert p.ci_low < p.ci_high, k
    assert a.to_dict() == b.to_dict()  # same seed, same intervals
    c = fit_law(pts, "N,D", LawOptions(n_boot=200, holdout=0, seed=1))
    assert c.params["alpha"].ci_low != a.params["alpha"].ci_low
    d = a.to_dict()
    assert d["level"] == 0.9 and d["bootstrap_resamples"] == 200 and d["huber_delta"] == 1e-3
    assert set(d["parameters"]["beta"]) == {"value", "ci_low", "ci_high"}


def test_more_noise_gives_wider_intervals():
    narrow = fit_law(n_points((1.6 + 120 * N ** -0.32) * (1 + 0.001 * np.sin(np.arange(10) * 7))),
                     "N", FAST)
    wide = fit_law(n_points((1.6 + 120 * N ** -0.32) * (1 + 0.02 * np.sin(np.arange(10) * 7))),
                   "N", FAST)
    w = lambda f: f.params["alpha"].ci_high - f.params["alpha"].ci_low
    assert w(wide) > 5 * w(narrow)


def test_intervals_are_given_below_four_points():
    f = fit_law(n_points([2.0 + 100 * n ** -0.4 for n in (1e5, 1e6, 1e7)], Ns=[1e5, 1e6, 1e7]),
                "N", FAST)
    assert f.alpha == pytest.approx(0.4, rel=1e-3)
    assert all(math.isfinite(p.ci_low) and math.isfinite(p.ci_high) for p in f.params.values())
    assert any("only 3 sizes" in w for w in f.warnings)


def law_with_largest(factor: float, still: bool = False):
    Ns = np.geomspace(1e5, 1e8, 6)
    wiggle = 1 + 0.002 * np.array([1, -1, 0.5, -0.5, 1, 0])
    L = (1.6 + 120 * Ns ** -0.32) * wiggle
    L[-1] *= factor
    return fit_law(n_points(L, Ns, still=(5,) if still else ()), "N",
                   LawOptions(n_boot=300))


def test_held_out_largest_model_is_predicted_inside_its_interval():
    (row,) = law_with_largest(1.0).holdout
    assert row.id == "r5" and row.fitted_sizes == 5 and row.inside
    assert abs(row.error_pct) < 1.0 and row.pi_low < row.predicted < row.pi_high


def test_a_broken_largest_model_is_flagged_outside_its_interval():
    f = law_with_largest(1.05, still=True)
    (row,) = f.holdout
    assert not row.inside and row.error_pct == pytest.approx(5.0, abs=1.0)
    assert row.still_improving
    d = f.to_dict()["holdout"][0]
    assert {"id", "predicted", "pi_low", "pi_high", "actual", "inside", "still_improving"} <= set(d)
    assert d["inside"] is False


def test_rollout_fits_every_ladder_rung():
    Ns = np.geomspace(1e5, 1e8, 6)
    f = fit_law(n_points(1.6 + 120 * Ns ** -0.32, Ns), "N",
                LawOptions(n_boot=100, holdout=1, rollout=True))
    assert sorted({h.fitted_sizes for h in f.holdout}) == [3, 4, 5]
    assert len(f.holdout) == 3 + 2 + 1 and all(h.inside for h in f.holdout)


def test_too_few_sizes_no_holdout_says_why():
    f = fit_law(n_points(1.6 + 120 * N[:4] ** -0.32, N[:4]), "N", LawOptions(n_boot=50))
    assert f.holdout == () and any("no held-out prediction" in w for w in f.warnings)


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(FitRefused, match="at least 3 different sizes; there are 2$"):
        fit_law(n_points([2.0, 1.8], Ns=[1e5, 1e6]), "N", FAST)
    with pytest.raises(FitRefused, match="all usable runs have the same parameter count"):
        fit_law(n_points([2.0, 1.9, 2.1], Ns=[1e5, 1e5, 1e5]), "N", FAST)
    with pytest.raises(FitRefused, match="does not fall with size"):
        fit_law(n_points([2.0, 2.1, 2.2, 2.3], Ns=[1e5, 1e6, 1e7, 1e8]), "N", FAST)
    with pytest.raises(FitRefused, match="needs at least 6 points"):
        fit_law(nd_points(1.7, 400, 410, 0.34, 0.28, 0.0, 0)[::6], "N,D", FAST)


def test_nan_and_missing_points_are_left_out_with_why():
    L = list(1.6 + 120 * N ** -0.32)
    L[2], L[3] = float("nan"), None
    pts = n_points(L)
    pts[4] = Point("r4", None, None, L[4], "r4")
    f = fit_law(pts, "N", FAST)
    assert f.n_points == 7
    why = {x.id: x.why for x in f.left_out}
    assert why == {"r2": "loss missing or not a positive number",
                   "r3": "loss missing or not a positive number", "r4": "parameter count unknown"}


def test_an_exponent_at_its_bound_is_warned_about():
    f = fit_law(n_points([2.4151, 2.3994, 2.3940, 2.4025], Ns=[54272, 103552, 152832, 202112]),
                "N", FAST)
    assert any("sits at a bound" in w or "sits at its bound" in w for w in f.warnings)
    clean = fit_law(n_points(1.6 + 120 * N ** -0.32), "N", FAST)
    assert clean.warnings == ()


# ---- Welch's test --------------------------------------------------------------------------

def test_t_distribution_matches_known_values():
    # P(|T| >= 2.228) with 10 df is 0.05; with 1 df the t is Cauchy: P(|T| >= 1) = 0.5
    assert t_sf2(2.228138851986, 10) == pytest.approx(0.05, abs=1e-9)
    assert t_sf2(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert t_ppf(0.975, 4) == pytest.approx(2.776445105, abs=1e-8)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)


def test_t_distribution_matches_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2, 3.7, 10, 50, 300):
        for t in (0.05, 1.0, 2.5, 7.0):
            assert t_sf2(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-14)
        assert t_ppf(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    a, b = [2.0, 2.01, 1.99, 2.02], [1.95, 1.99, 1.96]
    ref = stats.ttest_ind(b, a, equal_var=False)
    c = compare_configs(a, b)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_a_finding_needs_p_below_005_and_seeds():
    c = compare_configs([2.0, 2.01, 1.99], [1.9, 1.92, 1.91])
    assert c.finding and c.p < 0.001 and c.ci_low < c.diff < c.ci_high < 0
    assert "p = 0.00039" in c.text()
    noise = compare_configs([2.0, 2.01, 1.99], [2.005, 1.995, 2.012])
    assert not noise.finding and noise.ci_low < 0 < noise.ci_high
    one = compare_configs([2.0], [1.5])
    assert one.p is None and not one.finding and "one seed" in one.text()


def test_an_interval_every_resample_gives_alike_is_not_determined():
    """Three sizes, one run each: every resample that determines the law holds the same
    three points, so the 'interval' has zero width; the report says not determined."""
    from engine.report.fit_md import _pm
    f = fit_law(n_points([2.0 + 100 * n ** -0.4 * (1 + 0.01 * s) for n, s in
                          zip((1e5, 1e6, 1e7), (1, -1, 1))], Ns=[1e5, 1e6, 1e7]), "N", FAST)
    a = f.params["alpha"]
    assert a.ci_low == a.ci_high  # what the bootstrap gave
    assert _pm(a)[1] == "not determined" and not f.to_dict()["intervals_determined"]
    assert any("gives no interval" in w for w in f.warnings)
    # more sizes: a real interval, shown as such
    g = fit_law(n_points((1.6 + 120 * N ** -0.32) * (1 + 0.02 * np.sin(np.arange(10) * 7))),
                "N", FAST)
    assert g.to_dict()["intervals_determined"] and "–" in _pm(g.params["alpha"])[1]
