"""Continuous ranked probability score (CRPS) of a predicted organ volume against the raters' volumes.

``CRPS(F, x) = integral (F(y) - H(y - x))^2 dy`` where ``F`` is a CDF and ``H`` the Heaviside step. Its unit is the
unit of the volumes (ml throughout uqseg); it scales linearly with that unit. Three modes:

- :func:`crps_gaussian` -- ``F`` the Gaussian fitted to the rater volumes, closed form, no truncation.
- :func:`crps_curvas` -- what the CURVAS 2024 evaluation code computes: the same Gaussian, but its CDF tabulated at
  100 points between its 1 % and 99 % quantiles, linearly interpolated (0 below, 1 above) and integrated only over
  ``mu +- 3 sigma``. The score therefore saturates: beyond ``mu +- 3 sigma`` every prediction gets the same value,
  and it is 0 for every prediction when all raters give the same volume (``sigma = 0``).
- :func:`crps_ensemble` -- ``F`` the empirical distribution of T sampled volumes, scored against each rater's
  volume and averaged over raters (the energy form ``E|X - y| - E|X - X'| / 2``).

The Gaussian is fitted with the population standard deviation (``ddof = 0``), as the challenge code does.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

#: the CURVAS code tabulates the CDF at this many points between these quantiles
CURVAS_TABLE_POINTS = 100
CURVAS_TABLE_QUANTILES = (0.01, 0.99)
#: and integrates over mu +- this many standard deviations
CURVAS_HALF_WIDTH_SIGMAS = 3.0


def fit_gaussian(volumes: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation (``ddof = 0``) of the rater volumes ``(R,)``."""
    v = np.asarray(volumes, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no rater volumes")
    return float(v.mean()), float(v.std())


def crps_gaussian(x: float, mu: float, sigma: float) -> float:
    """Closed-form CRPS of ``N(mu, sigma^2)`` at ``x``: ``sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))``.

    ``z = (x - mu) / sigma``. For ``sigma = 0`` (all raters agree on the volume) ``F`` is a point mass and the CRPS
    is its limit ``|x - mu|``, the absolute volume error -- continuous in ``sigma``, never a division by zero.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return float(abs(x - mu))
    z = (x - mu) / sigma
    return float(sigma * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - 1.0 / np.sqrt(np.pi)))


def curvas_cdf_table(mu: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(xs, Fs)``, each ``(100,)``, of the tabulated Gaussian CDF the CURVAS code interpolates."""
    lo, hi = norm.ppf(CURVAS_TABLE_QUANTILES, loc=mu, scale=sigma)
    xs = np.linspace(lo, hi, CURVAS_TABLE_POINTS)
    return xs, norm.cdf(xs, loc=mu, scale=sigma)


def crps_curvas(x: float, mu: float, sigma: float) -> float:
    """CRPS exactly as the CURVAS 2024 evaluation defines it, integrated in closed form.

    ``integral_{mu - 3 sigma}^{mu + 3 sigma} (F~(y) - H(y - x))^2 dy`` with ``F~`` the piecewise-linear
    interpolation of the Gaussian CDF through :func:`curvas_cdf_table` (0 left of the first knot, 1 right of the
    last). The integrand is piecewise quadratic between the knots, the interval ends and ``x``, and each piece is
    integrated exactly (the challenge code uses ``scipy.integrate.quad``). ``sigma = 0`` gives 0 for any ``x``
    (an empty interval).
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return 0.0
    a = mu - CURVAS_HALF_WIDTH_SIGMAS * sigma
    b = mu + CURVAS_HALF_WIDTH_SIGMAS * sigma
    xs, fs = curvas_cdf_table(mu, sigma)
    # linear pieces of F~ as (left, right, F~ at left, F~ at right): left tail 0, knot intervals, right tail 1
    lefts = np.concatenate([[a], xs])
    rights = np.concatenate([xs, [b]])
    f_left = np.concatenate([[0.0], fs[:-1], [1.0]])
    f_right = np.concatenate([[0.0], fs[1:], [1.0]])
    total = 0.0
    for lo, hi, fl, fr in zip(lefts, rights, f_left, f_right, strict=True):
        if hi <= lo:
            continue
        if lo < x < hi:  # H jumps inside this piece: split it at x
            fx = fl + (fr - fl) * (x - lo) / (hi - lo)
            total += _square_integral(lo, x, fl, fx) + _square_integral(x, hi, fx - 1.0, fr - 1.0)
        else:
            h = 0.0 if hi <= x else 1.0
            total += _square_integral(lo, hi, fl - h, fr - h)
    return float(total)


def _square_integral(lo: float, hi: float, g_lo: float, g_hi: float) -> float:
    """Exact integral over [lo, hi] of g^2 for g linear from g_lo to g_hi."""
    return (hi - lo) * (g_lo * g_lo + g_lo * g_hi + g_hi * g_hi) / 3.0


def crps_ensemble(obs: float | np.ndarray, samples: np.ndarray) -> float:
    """CRPS of the empirical distribution of ``samples`` ``(T,)`` against ``obs``, averaged over ``obs``.

    ``E|X - y| - 0.5 E|X - X'|`` with X, X' independent draws from the T samples (all T^2 pairs, as
    ``properscoring.crps_ensemble``). ``obs`` is a scalar or the ``(R,)`` rater volumes; the result is the mean over
    raters. ``E|X - X'|`` uses the sorted-sample identity ``2 / T^2 sum_i (2 i - T - 1) x_(i)``.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    y = np.atleast_1d(np.asarray(obs, dtype=np.float64)).ravel()
    t = x.size
    if t == 0 or y.size == 0:
        raise ValueError("crps_ensemble needs at least one sample and one observation")
    spread = 2.0 / (t * t) * float(np.sum((2.0 * np.arange(1, t + 1) - t - 1.0) * x))
    err = np.abs(x[None, :] - y[:, None]).mean(axis=1)
    return float(np.mean(err - 0.5 * spread))


CRPS_MODES = ("gaussian", "curvas", "ensemble")
