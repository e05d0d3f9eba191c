"""ACE of `evaluate` (equal-mass groups found by partition, ties placed by voxel order, slab by slab) against the
reference sort-based `calibration.ace`, with heavy ties (confidence exactly 1) spanning several groups."""

from __future__ import annotations

import numpy as np
import pytest

from uqseg_cli.metrics.calibration import ace
from uqseg_cli.metrics.evaluation import _ace_from_parts


@pytest.mark.parametrize("kind", ["random32", "few_values", "all_ones", "float64_ties"])
def test_ace_from_slab_parts_equals_the_sorted_reference(kind):
    rng = np.random.default_rng(7)
    for _ in range(60):
        n, bins = int(rng.integers(1, 500)), int(rng.integers(1, 60))
        if kind == "random32":
            c = rng.random(n).astype(np.float32)
        elif kind == "few_values":
            c = rng.choice(np.array([0.5, 0.75, 1.0], np.float32), n)
        elif kind == "all_ones":
            c = np.ones(n, np.float32)
        else:
            c = rng.choice(np.array([0.3, 0.3 + 1e-12, 1.0]), n)
        correct = [rng.random(n) < 0.6 for _ in range(int(rng.integers(1, 4)))]
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 5))))
        got = _ace_from_parts(
            [p.copy() for p in np.split(c, cuts)], [[np.packbits(p) for p in np.split(a, cuts)] for a in correct], bins
        )
        assert got == pytest.approx([ace(c, a, bins) for a in correct], abs=1e-12)


def test_empty_is_nan():
    assert np.isnan(_ace_from_parts([], [[]], 15)[0])
    assert np.isnan(_ace_from_parts([np.zeros(0, np.float32)], [[np.packbits(np.zeros(0, bool))]], 15)[0])
