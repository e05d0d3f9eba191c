"""Surface distances and the 95 % Hausdorff distance in mm (pure functions, no I/O).

Convention (as MONAI ``compute_hausdorff_distance(percentile=95)``): the surface of a binary mask is the set of its
voxels that the erosion with the face-connected structuring element removes (voxels on the array edge count as
surface); the directed distances from each surface voxel of A to the nearest surface voxel of B are measured in mm
with the voxel ``spacing``; HD95 is the larger of the two directed 95th percentiles (linear interpolation).
Both masks empty gives 0.0; exactly one empty gives ``nan`` (undefined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface voxels of a binary mask of any dimension (same shape)."""
    m = np.asarray(mask).astype(bool)
    if not m.any():
        return m.copy()
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def directed_surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``.

    ``a``, ``b``: binary masks of equal shape; ``spacing``: mm per axis in array order. Both must be non-empty.
    Returns a 1-D float64 array with one distance per surface voxel of ``a``.
    """
    sa, sb = surface(a), surface(b)
    dt = ndimage.distance_transform_edt(~sb, sampling=[float(s) for s in spacing])
    return dt[sa].astype(np.float64)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm between two binary masks (``pred``, ``ref``: same shape)."""
    p = np.asarray(pred).astype(bool)
    r = np.asarray(ref).astype(bool)
    if p.shape != r.shape:
        raise ValueError(f"shape mismatch: prediction {p.shape}, reference {r.shape}")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * p.ndim
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {p.ndim}-D mask")
    pe, re_ = not p.any(), not r.any()
    if pe and re_:
        return 0.0
    if pe or re_:
        return math.nan
    d_pr = directed_surface_distances(p, r, spacing)
    d_rp = directed_surface_distances(r, p, spacing)
    return float(max(np.percentile(d_pr, percentile), np.percentile(d_rp, percentile)))
