"""Uncertainty maps of one case and method from its stored sums, slab by slab (memory independent of T).

Reads ``sum_p``, ``sum_logp`` ``(K, *spatial)`` and ``sum_entropy`` ``(*spatial)`` — numpy arrays or h5py
datasets — in slabs along the first spatial axis, computes the measures of :mod:`uqseg_cli.bayes.measures` in float64
and returns full maps in the storage dtype, plus ``mean_segmentation`` (uint8 argmax of p̄).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from uqseg_cli.bayes.measures import MEASURES, SampleSums, argmax_classes, uncertainty_maps


def maps_by_slab(
    sum_p,
    sum_logp,
    sum_entropy,
    T: int,
    measures: Sequence[str] = MEASURES,
    *,
    pairs: str = "all",
    out_dtype=np.float32,
    slab_voxels: int = 1 << 18,
) -> dict[str, np.ndarray]:
    """``{measure: (*spatial) out_dtype map, "mean_segmentation": (*spatial) uint8}``.

    Args:
        sum_p, sum_logp: ``(K, *spatial)`` array-likes; sum_entropy: ``(*spatial)``.
        T: number of samples summed.
        measures: names from :data:`uqseg_cli.bayes.measures.MEASURES`.
        pairs: EPKL over ``all`` ordered pairs or ``distinct`` ones.
        out_dtype: storage dtype (float32 or float16).
        slab_voxels: voxels per slab (bounds the float64 temporaries).
    """
    shape = tuple(sum_entropy.shape)
    if tuple(sum_p.shape[1:]) != shape or tuple(sum_logp.shape) != tuple(sum_p.shape):
        raise ValueError(
            f"sums do not match: sum_p {tuple(sum_p.shape)}, sum_logp {tuple(sum_logp.shape)}, "
            f"sum_entropy {shape}"
        )
    out = {m: np.empty(shape, dtype=out_dtype) for m in measures}
    seg = np.empty(shape, dtype=np.uint8)
    per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, slab_voxels // max(1, per_row))
    for a in range(0, shape[0], step):
        b = min(shape[0], a + step)
        sums = SampleSums(
            torch.from_numpy(np.asarray(sum_p[:, a:b])),
            torch.from_numpy(np.asarray(sum_logp[:, a:b])),
            torch.from_numpy(np.asarray(sum_entropy[a:b])),
            int(T),
        )
        maps = uncertainty_maps(sums, measures, pairs=pairs)  # type: ignore[arg-type]
        with np.errstate(over="ignore"):  # float16: values beyond 65504 become inf
            for m in measures:
                out[m][a:b] = maps[m].numpy().astype(out_dtype)
        seg[a:b] = argmax_classes(sums.sum_p, 0).numpy()
    out["mean_segmentation"] = seg
    return out
