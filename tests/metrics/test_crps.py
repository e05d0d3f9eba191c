"""Volume CRPS: Gaussian vs properscoring, curvas vs direct numerical integration of the challenge's formula,
ensemble vs properscoring."""

from __future__ import annotations

import numpy as np
import properscoring as ps
import pytest
from scipy.integrate import quad
from scipy.interpolate import interp1d
from scipy.stats import norm

from uqseg_cli.metrics import crps


@pytest.mark.parametrize("x,mu,sigma", [(0.0, 0.0, 1.0), (3.7, 1.2, 0.4), (-50.0, 100.0, 20.0), (101.6, 101.7, 6.2)])
def test_gaussian_equals_properscoring(x, mu, sigma):
    assert crps.crps_gaussian(x, mu, sigma) == pytest.approx(float(ps.crps_gaussian(x, mu, sigma)), abs=1e-6)


def test_gaussian_sigma_zero_is_absolute_error_and_continuous():
    assert crps.crps_gaussian(12.5, 10.0, 0.0) == 2.5
    assert crps.crps_gaussian(10.0, 10.0, 0.0) == 0.0
    # the limit sigma -> 0 of the closed form
    assert crps.crps_gaussian(12.5, 10.0, 1e-9) == pytest.approx(2.5, abs=1e-6)
    with pytest.raises(ValueError):
        crps.crps_gaussian(1.0, 0.0, -1.0)


def _official_formula(x, mu, sigma):
    """The challenge's formula, integrated numerically piece by piece with scipy's quad."""
    g = norm(loc=mu, scale=sigma)
    xs = np.linspace(g.ppf(0.01), g.ppf(0.99), 100)
    cdf = interp1d(xs, g.cdf(xs), bounds_error=False, fill_value=(0, 1))

    def integrand(y):
        return (cdf(y) - 0.5 * (np.sign(y - x) + 1)) ** 2

    a, b = mu - 3 * sigma, mu + 3 * sigma
    pts = np.unique(np.concatenate([[a, b], xs, [x] if a < x < b else []]))
    return sum(quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-13)[0] for lo, hi in zip(pts[:-1], pts[1:], strict=True))


@pytest.mark.parametrize("x", [40.0, 85.0, 95.0, 99.9, 101.67, 104.0, 110.0, 115.0, 200.0])
def test_curvas_equals_numerical_integration(x):
    vols = np.array([100.0, 110.0, 95.0])
    mu, sigma = crps.fit_gaussian(vols)
    assert sigma == pytest.approx(np.std(vols))  # population std, as the challenge
    assert crps.crps_curvas(x, mu, sigma) == pytest.approx(_official_formula(x, mu, sigma), rel=1e-9, abs=1e-9)


def test_curvas_saturates_far_from_mu():
    mu, sigma = 50.0, 2.0
    far_low = [crps.crps_curvas(x, mu, sigma) for x in (mu - 3 * sigma, 10.0, -1e6)]
    far_high = [crps.crps_curvas(x, mu, sigma) for x in (mu + 3 * sigma, 90.0, 1e6)]
    assert max(far_low) - min(far_low) < 1e-12
    assert max(far_high) - min(far_high) < 1e-12
    # ... while the untruncated Gaussian CRPS keeps growing with the error
    assert crps.crps_gaussian(1e6, mu, sigma) > 1e5
    # the saturated value is the integral of the tabulated CDF's tail mass: same as the numerical reference
    assert far_high[0] == pytest.approx(_official_formula(1e6, mu, sigma), rel=1e-9)


def test_curvas_sigma_zero_is_zero_for_every_prediction():
    for x in (0.0, 10.0, 1e9):
        assert crps.crps_curvas(x, 10.0, 0.0) == 0.0


def test_curvas_close_to_gaussian_near_mu():
    # inside mu +- 3 sigma the truncated, tabulated score differs from the closed form only slightly
    assert crps.crps_curvas(101.0, 100.0, 5.0) == pytest.approx(crps.crps_gaussian(101.0, 100.0, 5.0), rel=1e-2)


@pytest.mark.parametrize("t", [1, 2, 7, 30])
def test_ensemble_equals_properscoring(t):
    rng = np.random.default_rng(t)
    samples = rng.normal(100, 5, size=t)
    raters = np.array([97.0, 103.0, 110.0])
    want = np.mean([ps.crps_ensemble(r, samples) for r in raters])
    assert crps.crps_ensemble(raters, samples) == pytest.approx(float(want), abs=1e-9)
    assert crps.crps_ensemble(100.0, samples) == pytest.approx(float(ps.crps_ensemble(100.0, samples)), abs=1e-9)


def test_ensemble_of_one_sample_is_absolute_error():
    assert crps.crps_ensemble(np.array([3.0, 5.0]), np.array([4.5])) == pytest.approx((1.5 + 0.5) / 2)
