"""The power-law fit recovers a known law: L(N) = E + A·N^-alpha."""

from __future__ import annotations

import numpy as np
import pytest

from engine.report.fit import FitRefused, fit_power_law

N = np.geomspace(1e5, 1e8, 10)  # three decades of model size, 10 runs


def synth(E: float, A: float, alpha: float, noise: float, seed: int) -> np.ndarray:
    """Losses from the law with multiplicative Gaussian noise (noise = relative sd)."""
    rng = np.random.default_rng(seed)
    return (E + A * N ** -alpha) * (1 + noise * rng.standard_normal(len(N)))


@pytest.mark.parametrize("E,A,alpha", [(1.6, 120.0, 0.32), (0.0, 30.0, 0.076),
                                       (2.0, 400.0, 0.5), (1.2, 8.0, 0.15)])
def test_exact_losses_recover_every_parameter(E, A, alpha):
    f = fit_power_law(N, synth(E, A, alpha, 0.0, 0))
    assert f.alpha == pytest.approx(alpha, rel=1e-4)
    assert f.E == pytest.approx(E, abs=1e-4)
    assert f.A == pytest.approx(A, rel=1e-3)
    assert f.rmse < 1e-8


@pytest.mark.parametrize("noise", [0.0005, 0.001])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_noisy_losses_recover_alpha_within_2_percent(noise, seed):
    f = fit_power_law(N, synth(1.6, 120.0, 0.32, noise, seed))
    assert abs(f.alpha / 0.32 - 1) < 0.02
    # the reported error describes the noise: RMSE near noise x loss, and the true alpha
    # lies within 4 standard errors
    assert f.rmse < 3 * noise * 3.0
    assert f.se_alpha is not None and abs(f.alpha - 0.32) < 4 * f.se_alpha + 1e-9


def test_larger_noise_gives_a_larger_reported_error():
    small = fit_power_law(N, synth(1.6, 120.0, 0.32, 0.001, 7))
    big = fit_power_law(N, synth(1.6, 120.0, 0.32, 0.02, 7))
    assert big.rmse > 5 * small.rmse and big.se_alpha > 5 * small.se_alpha


def test_fewer_than_three_sizes_is_refused():
    with pytest.raises(FitRefused, match="at least 3"):
        fit_power_law([1e5, 1e6], [2.0, 1.8])
    with pytest.raises(FitRefused, match="there are 2"):
        fit_power_law([1e5, 1e5, 1e6], [2.0, 2.1, 1.8])  # repeated size counts once
    with pytest.raises(FitRefused):
        fit_power_law([1e5, 1e6, float("nan")], [2.0, 1.8, 1.7])


def test_three_points_fit_without_standard_errors():
    f = fit_power_law([1e5, 1e6, 1e7], [2.0 + 100 * n ** -0.4 for n in (1e5, 1e6, 1e7)])
    assert f.alpha == pytest.approx(0.4, rel=1e-3)
    assert f.se_alpha is None and f.n_points == 3


def test_flat_losses_do_not_crash():
    f = fit_power_law([1e5, 1e6, 1e7, 1e8], [2.0, 2.0, 2.0, 2.0])
    assert f.predict(1e6) == pytest.approx(2.0)


def test_losses_that_do_not_fall_with_size_are_flagged():
    # the largest model is worse: alpha runs to the edge of its range, and the fit says so
    f = fit_power_law([54272, 103552, 152832, 202112], [2.4151, 2.3994, 2.3940, 2.4025])
    assert "do not read α as a scaling exponent" in f.warning
    rising = fit_power_law([1e5, 1e6, 1e7, 1e8], [2.0, 2.1, 2.2, 2.3])
    assert rising.A == 0.0 and "flat line" in rising.warning
    assert fit_power_law(N, synth(1.6, 120.0, 0.32, 0.0, 0)).warning == ""
