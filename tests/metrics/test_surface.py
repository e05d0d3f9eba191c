"""HD95 against a brute-force definition (explicit surface points, all pairwise distances in mm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from uqseg_cli.metrics.surface import hd95, surface


def _brute_surface(m: np.ndarray) -> np.ndarray:
    """Voxels of m with a face neighbour outside m (or outside the array)."""
    pad = np.pad(m, 1, constant_values=False)
    out = np.zeros_like(m)
    for idx in zip(*np.nonzero(m), strict=False):
        for ax in range(m.ndim):
            for d in (-1, 1):
                j = [i + 1 for i in idx]
                j[ax] += d
                if not pad[tuple(j)]:
                    out[idx] = True
    return out


def _brute_hd95(a, b, spacing):
    pa = np.argwhere(_brute_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_brute_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_surface_matches_brute_force():
    rng = np.random.default_rng(1)
    m = ndimage.binary_opening(rng.random((20, 17)) > 0.4)
    np.testing.assert_array_equal(surface(m), _brute_surface(m))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_hd95_2d(spacing):
    rng = np.random.default_rng(2)
    a = np.zeros((30, 30), bool)
    a[5:20, 8:25] = True
    b = ndimage.binary_dilation(a, iterations=2) & (rng.random(a.shape) > 0.1)
    assert hd95(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing), abs=1e-9)


def test_hd95_3d_anisotropic():
    a = np.zeros((8, 12, 12), bool)
    a[2:6, 3:9, 3:9] = True
    b = np.zeros_like(a)
    b[3:7, 4:11, 2:8] = True
    sp = (2.5, 0.8, 0.8)
    assert hd95(a, b, sp) == pytest.approx(_brute_hd95(a, b, sp), abs=1e-9)


def test_hd95_shift_exact():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 3, axis=1)
    # every surface voxel ... at most 3 voxels away; HD100 exactly 3 voxels * 0.5 mm
    assert hd95(a, b, (1.0, 0.5), percentile=100) == pytest.approx(1.5)
    assert hd95(a, a, (1.0, 1.0)) == 0.0


def test_empty_conventions():
    z = np.zeros((5, 5), bool)
    o = z.copy()
    o[2, 2] = True
    assert hd95(z, z) == 0.0
    assert math.isnan(hd95(z, o))
    assert math.isnan(hd95(o, z))
