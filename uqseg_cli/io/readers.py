"""Readers for 2D images (PNG/JPEG/BMP/TIFF) and NIfTI volumes, and for masks on the same grid.

Arrays come back channel-first: images ``(C, H, W)`` or ``(C, D, H, W)``, masks ``(H, W)`` or ``(D, H, W)``.
NIfTI ``(X, Y, Z)`` data is transposed to ``(Z, Y, X)`` and the spacing reversed to match, so that axis order is
the same for every format. A NIfTI holding a single slice is a 2D image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uqseg_cli.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NAN_POLICIES = ("error", "zero", "min")  # what --nan-policy does with NaN/±inf voxels: refuse the case, 0, finite min
MAX_UNNAMED_LABEL = 63  # without class names, a mask value above this is an intensity, not a label
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ALL_SUFFIXES = IMAGE_SUFFIXES + NIFTI_SUFFIXES


@dataclass
class Case:
    """One loaded case. Arrays are channel-first; ``spacing`` is in mm, one value per spatial axis."""

    id: str
    image: np.ndarray
    spacing: tuple[float, ...]
    mask: np.ndarray | None = None
    raters: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.image.ndim - 1


def file_suffix(path: Path | str) -> str:
    """Lower-case suffix, treating ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def case_id_of(path: Path | str) -> str:
    """The case id of a file: its name without the (possibly double) suffix."""
    name = Path(path).name
    suf = file_suffix(name)
    return name[: len(name) - len(suf)] if suf else name


def _check_file(path: Path, case: str | None) -> None:
    where = f"{path}" + (f" (case {case})" if case else "")
    if not path.exists():
        raise InputError(f"{where}: file not found")
    if path.is_dir():
        raise InputError(f"{where}: is a folder, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: file is empty")
    if file_suffix(path) not in ALL_SUFFIXES:
        raise InputError(
            f"{where}: unsupported file type {file_suffix(path)!r} (expected one of {', '.join(ALL_SUFFIXES)})"
        )


def _read_2d(path: Path, case: str | None) -> tuple[np.ndarray, tuple[float, ...]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                im = im.convert("RGB" if im.mode not in ("LA", "1") else "L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"{path}" + (f" (case {case})" if case else "") + f": cannot decode image: {exc}"
        ) from None
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr), (1.0, 1.0)


def _read_nifti(path: Path, case: str | None) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    except Exception as exc:  # nibabel raises many types for truncated/garbled files
        raise InputError(
            f"{path}" + (f" (case {case})" if case else "") + f": cannot read NIfTI: {exc}"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data, zooms = data[..., 0], zooms[:3]
    if data.ndim == 3 and data.shape[2] == 1:
        data, zooms = data[..., 0], zooms[:2]
    if data.ndim not in (2, 3):
        raise InputError(f"{path}: expected a 2D or 3D NIfTI, got shape {data.shape}")
    data = np.ascontiguousarray(data.T)  # (X, Y[, Z]) -> ([Z,] Y, X)
    spacing = tuple(reversed(zooms))
    return data[None], spacing


def apply_nan_policy(arr: np.ndarray, policy: str, where: str) -> np.ndarray:
    """Refuse (``error``) or replace (``zero``, ``min``: the smallest finite value) NaN and ±inf voxels."""
    if arr.dtype.kind not in "fc":
        return arr
    bad = ~np.isfinite(arr)
    n = int(bad.sum())
    if n == 0:
        return arr
    if policy not in NAN_POLICIES:
        raise InputError(f"--nan-policy {policy!r}: expected one of {', '.join(NAN_POLICIES)}")
    if policy == "error":
        kinds = [k for k, m in (("NaN", np.isnan(arr)), ("+inf", np.isposinf(arr)), ("-inf", np.isneginf(arr)))
                 if m.any()]
        raise InputError(
            f"{where}: {n} of {arr.size} voxel(s) are {'/'.join(kinds)}; refusing the case "
            "(--nan-policy zero or min replaces them)"
        )
    fill = 0.0
    if policy == "min":
        finite = arr[~bad]
        fill = float(finite.min()) if finite.size else 0.0
    arr = arr.copy()
    arr[bad] = fill
    return arr


def read_image(
    path: Path | str, case: str | None = None, nan_policy: str = "error"
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image or volume. Returns ``(array (C, *spatial), spacing_mm)``.

    Photos keep their dtype (uint8 usually) with spacing 1 mm; NIfTI data is float32 with header spacing.
    NaN/±inf voxels (NIfTI, float TIFF) refuse the case unless ``nan_policy`` replaces them.
    """
    path = Path(path)
    _check_file(path, case)
    if file_suffix(path) in NIFTI_SUFFIXES:
        arr, spacing = _read_nifti(path, case)
        arr = arr.astype(np.float32, copy=False)
    else:
        arr, spacing = _read_2d(path, case)
    if min(arr.shape[1:]) < 1:
        raise InputError(f"{path}: image has an empty axis, shape {arr.shape[1:]}")
    arr = apply_nan_policy(arr, nan_policy, f"{path}" + (f" (case {case})" if case else ""))
    return arr, spacing


_jpeg_warned: set[str] = set()


def read_mask(
    path: Path | str, shape: tuple[int, ...], case: str | None = None, class_names: list[str] | None = None
) -> np.ndarray:
    """Read a label mask on the image grid ``shape`` (spatial). Returns uint8 labels ``(*shape)``.

    Binary masks are mapped explicitly: 0/255 and 0/1 are background/foreground. Other values must be labels of
    ``class_names`` (0 .. K-1) when those are known, else small integers (at most 63); anything else — 0/128/255
    masks, JPEG compression noise, label 7 in a 2-class task — is refused with the offending values named.
    Colour masks must be grey (all channels equal). JPEG masks get a warning (lossy compression changes labels).
    """
    path = Path(path)
    arr, _ = read_image(path, case)
    where = f"{path}" + (f" (case {case})" if case else "")
    if file_suffix(path) in (".jpg", ".jpeg") and str(path.parent) not in _jpeg_warned:
        _jpeg_warned.add(str(path.parent))
        from uqseg_cli.progress import warn

        warn(f"{where}: JPEG mask: lossy compression alters label values near edges; PNG masks are safer")
    if arr.shape[0] > 1:
        if not np.all(arr == arr[:1]):
            raise InputError(f"{where}: mask has {arr.shape[0]} differing channels, expected a label image")
    arr = arr[0]
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"{where}: mask shape {tuple(arr.shape)} differs from image shape {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: mask holds NaN or infinite values")
    if np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise InputError(f"{where}: mask holds negative or non-integer values; expected integer labels")
    values = [int(v) for v in np.unique(arr)]
    k = len(class_names) if class_names else None
    if set(values) <= {0, 255} and 255 in values and k in (None, 2):
        return (arr > 0).astype(np.uint8)  # 0/255: background/foreground
    limit = (k - 1) if k else MAX_UNNAMED_LABEL
    bad = [v for v in values if v > limit]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        if k:
            expect = f"labels 0..{k - 1} of the classes {', '.join(class_names)}"
            if k == 2:
                expect += " (or 0/255)"
        else:
            expect = "0/1 or 0/255 for a binary mask, or integer labels 0, 1, 2, ..."
        raise InputError(f"{where}: mask values {shown} are not labels (values found: "
                         f"{', '.join(map(str, values[:10]))}{' ...' if len(values) > 10 else ''}); expected {expect}")
    return arr.astype(np.uint8)


def value_scale_for(dtype: np.dtype) -> float:
    """Divisor that maps a photo of this dtype to [0, 1]: 255 (uint8), 65535 (uint16), 1 (float)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0
