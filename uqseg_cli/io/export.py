"""Maps of a stage file written for viewers: NIfTI on the source affine (3D Slicer, ITK-SNAP, napari) and PNG
overlays for 2D cases.

A map is any per-case array of the file or its lineage: ``segmentation``, ``probabilities``, ``reference``,
``raters``, ``image`` (predict.h5), ``<method>/mean_probabilities`` (Σp / T of samples.h5), ``<method>/<measure>``
and ``<method>/mean_segmentation`` (uncertainty.h5), ``gradcam`` (explain). uqseg arrays are ``(*spatial)`` or
``(C, *spatial)`` with the NIfTI axes reversed; they are written back in the source file's axis order with its
affine, so the map overlays the original image voxel for voxel. Maps with channels become 4D NIfTI
``(x, y, z, C)`` (2D: ``(x, y, 1, C)``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from uqseg_cli.io.atomic import atomic_write
from uqseg_cli.io.geometry import to_nifti_order

LABEL_MAPS = ("segmentation", "reference", "mean_segmentation")
LOG_K_MEASURES = ("entropy", "expected_entropy", "mutual_information")
CLASS_COLOURS = np.array(
    [[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255], [0, 220, 220]],
    dtype=np.float32,
)


def map_file_name(name: str) -> str:
    """``tta/entropy`` → ``tta_entropy`` (one flat file per map inside the case folder)."""
    return name.replace("/", "_")


def nifti_dtype(arr: np.ndarray) -> np.dtype:
    """Integer maps keep a small integer type; float16 (not read by every viewer) becomes float32."""
    if arr.dtype == np.bool_:
        return np.dtype(np.uint8)
    if arr.dtype.kind in "iu":
        return arr.dtype if arr.dtype.itemsize <= 2 else np.dtype(np.int32)
    return np.dtype(np.float32)


def nifti_image(arr: np.ndarray, affine: np.ndarray, spatial_ndim: int):
    """A ``Nifti1Image`` of a uqseg map (``(*spatial)`` or ``(C, *spatial)``) on ``affine`` (sform and qform)."""
    import nibabel as nib

    a = np.asarray(arr)
    channels = a.ndim == spatial_ndim + 1
    data = to_nifti_order(a, channels=channels).astype(nifti_dtype(a), copy=False)
    if channels and spatial_ndim == 2:
        data = data[:, :, None, :]  # (x, y, 1, C): a one-slice image with C channels, not a C-slice volume
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    return img


def save_atomic(write, path: Path) -> Path:
    """Write through ``write(tmp_path)`` (a name with the target's suffix, so writers pick the format) atomically."""
    return atomic_write(path, write, keep_suffix=True)


def save_nifti(arr: np.ndarray, affine: np.ndarray, spatial_ndim: int, path: Path) -> Path:
    import nibabel as nib

    img = nifti_image(arr, affine, spatial_ndim)
    return save_atomic(lambda p: nib.save(img, str(p)), path)


# ------------------------------------------------------------------------------------------------ PNG overlays
def display_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` image → ``(H, W, 3)`` float in [0, 1] (percentile window for CT/float images)."""
    img = np.asarray(image, dtype=np.float32)
    img = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((np.moveaxis(img, 0, -1) - lo) / (hi - lo), 0.0, 1.0)


def heat_scale(name: str, values: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Fixed colour scale per kind of map: probabilities and confidence 0..1, entropy/MI 0..ln K (nats),
    anything else 0..its 99.5th percentile."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in LOG_K_MEASURES:
        return 0.0, math.log(max(2, num_classes))
    if leaf in ("confidence", "probabilities", "mean_probabilities", "raters"):
        return 0.0, 1.0
    finite = values[np.isfinite(values)]
    hi = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return 0.0, hi if hi > 0 else 1.0


def overlay_png(image: np.ndarray, name: str, arr: np.ndarray, num_classes: int, path: Path, alpha: float = 0.5
                ) -> Path:
    """A 2D overlay at the image resolution: label maps in class colours, other maps as a heat map (turbo,
    transparent near 0)."""
    from matplotlib import colormaps
    from PIL import Image

    base = display_rgb(image)
    a = np.asarray(arr)
    leaf = name.rsplit("/", 1)[-1]
    if leaf in LABEL_MAPS and a.ndim == 2:
        lab = a.astype(np.int64)
        colours = CLASS_COLOURS[np.clip(lab, 0, len(CLASS_COLOURS) - 1)] / 255.0
        fg = (lab > 0)[..., None]
        rgb = np.where(fg, (1 - alpha) * base + alpha * colours, base)
    else:
        if a.ndim == 3:  # channel maps: foreground probability, or the fraction of raters marking a voxel
            a = 1.0 - a[0].astype(np.float32) if "probabilities" in leaf else (a > 0).mean(axis=0)
        v = a.astype(np.float32)
        lo, hi = heat_scale(name, v, num_classes)
        t = np.clip((np.nan_to_num(v, nan=0.0, posinf=hi) - lo) / (hi - lo), 0.0, 1.0)
        heat = colormaps["turbo"](t)[..., :3]
        w = (alpha + (1 - alpha) * t)[..., None] * (t > 0.02)[..., None]  # faint where near 0, opaque at the top
        rgb = (1 - w) * base + w * heat
    out = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return save_atomic(lambda p: Image.fromarray(out).save(p, format="PNG"), path)
