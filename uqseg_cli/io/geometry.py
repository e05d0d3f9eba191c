"""Where a case's voxels sit in the world: the source affine, and maps between uqseg and NIfTI axis order.

uqseg arrays are ``(H, W)`` / ``(D, H, W)``: the NIfTI ``(X, Y[, Z])`` data array reversed (docs/architecture.md).
The *affine* kept per case (attribute ``affine`` of ``predict.h5``, 4×4 float64) is the NIfTI affine of the source
file as nibabel reports it (sform when set, else qform, else the header zooms): it maps the source file's voxel
indices ``(i, j, k)`` — the uqseg axes reversed — to world millimetres (RAS+). A 2D photo gets the identity with its
pixel size: ``diag(spacing_w, spacing_h, 1, 1)`` (i = column, j = row).

Pure functions on arrays and headers; readers live in ``io/readers.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uqseg_cli.errors import InputError
from uqseg_cli.io.readers import NIFTI_SUFFIXES, file_suffix

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """The affine of a grid known only by its spacing (uqseg axis order): ``diag`` of the reversed spacing."""
    zooms = [float(s) for s in reversed(tuple(spacing))]
    zooms = (zooms + [1.0, 1.0, 1.0])[:3]
    return np.diag([*zooms, 1.0])


def nifti_affine(path: Path | str) -> np.ndarray:
    """The 4×4 affine of a NIfTI file (header only; the data is not read)."""
    import nibabel as nib

    try:
        return np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the NIfTI header: {exc}") from None


def source_affine(path: Path | str, spacing: Sequence[float]) -> np.ndarray:
    """The affine to keep for an image read from ``path``: its NIfTI affine, or the spacing affine for photos."""
    if file_suffix(path) in NIFTI_SUFFIXES:
        return nifti_affine(path)
    return spacing_affine(spacing)


def affine_from_sitk(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """The NIfTI (RAS) affine of an image that SimpleITK describes by spacing, origin and direction (LPS).

    ITK: ``point_LPS = origin + direction @ diag(spacing) @ index``; NIfTI stores RAS, so x and y flip sign. A 2D
    SimpleITK image (2 spacings, a 2×2 direction) becomes a one-slice 3D affine.
    """
    n = len(spacing)
    if n not in (2, 3) or len(origin) != n or len(direction) != n * n:
        raise ValueError(f"SimpleITK geometry of {n} dimensions is not 2D or 3D")
    d = np.eye(3)
    d[:n, :n] = np.asarray(direction, dtype=np.float64).reshape(n, n)
    s = np.ones(3)
    s[:n] = np.asarray(spacing, dtype=np.float64)
    o = np.zeros(3)
    o[:n] = np.asarray(origin, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = LPS_TO_RAS @ d @ np.diag(s)
    aff[:3, 3] = LPS_TO_RAS @ o
    return aff


def to_nifti_order(arr: np.ndarray, channels: bool = False) -> np.ndarray:
    """uqseg order → NIfTI data order: spatial axes reversed; a leading channel axis moves last (4D NIfTI)."""
    a = np.asarray(arr)
    if channels:
        spatial = a.ndim - 1
        return np.ascontiguousarray(np.transpose(a, tuple(range(spatial, 0, -1)) + (0,)))
    return np.ascontiguousarray(a.T)


def from_nifti_order(arr: np.ndarray, channels: bool = False) -> np.ndarray:
    """NIfTI data order → uqseg order (the inverse of :func:`to_nifti_order`)."""
    a = np.asarray(arr)
    if channels:
        spatial = a.ndim - 1
        return np.ascontiguousarray(np.transpose(a, (spatial,) + tuple(range(spatial - 1, -1, -1))))
    return np.ascontiguousarray(a.T)


def same_grid(a: np.ndarray, b: np.ndarray, atol: float = 1e-3) -> bool:
    """True when two affines place voxels at the same world positions (within ``atol`` mm per unit index)."""
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=atol))


def reorient(data_xyz: np.ndarray, affine: np.ndarray, target_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the axes of a NIfTI-ordered 3D array (optionally with trailing channel axes) from ``affine``'s
    orientation to ``target_affine``'s, as nibabel's ``as_reoriented`` would. Returns (data, its new affine).

    Only axis permutations and flips are done (no resampling): a prediction saved in RAS by MONAI's
    ``Orientationd`` or nnU-Net's ``NibabelIOWithReorient`` comes back onto the grid of its LPS source image.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    src, dst = io_orientation(affine), io_orientation(target_affine)
    if np.array_equal(src, dst):
        return data_xyz, np.asarray(affine, dtype=np.float64)
    t = ornt_transform(src, dst)
    shape3 = data_xyz.shape[:3]
    out = apply_orientation(data_xyz, t)
    new_aff = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(t, shape3)
    return np.ascontiguousarray(out), new_aff
