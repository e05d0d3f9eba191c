"""Predictions made by other tools, read onto the grid of their source image (``uqseg import``, ``sample --method
files``).

One prediction per case id, found in a folder by file name:

* ``<case>.npz`` — nnU-Net v2 ``--save_probabilities`` (``probabilities`` (K, *spatial)); geometry from the
  sibling ``<case>.pkl`` (or, without it, the sibling segmentation ``<case>.nii.gz``); see ``io/nnunet.py``;
* ``<case>.nii.gz`` / ``.nii`` — a label map (TotalSegmentator ``--ml``, nnU-Net/MONAI segmentations), a
  one-channel foreground probability map, or K channels in the last axis (MONAI ``SaveImage`` writes
  ``(x, y, z, K)``; ITK vector images ``(x, y, z, 1, K)``); axes are permuted/flipped onto the image's orientation
  when the file was saved in another one (e.g. RAS after MONAI ``Orientationd``);
* ``<case>.png`` / ``.tif`` / ``.bmp`` — a label map (0/1/…, or 0/255) or a grey foreground probability map
  (value / 255, or / 65535 for 16 bit);
* ``<case>/`` — a folder of binary masks, one per structure (TotalSegmentator's default output): class k is the
  k-th file in name order (or in the order of ``class_names``).

``kind`` says how a one-channel file is read: ``labels``, ``probabilities`` or ``auto`` (integer values → labels;
fractional values in [0, 1] → probabilities). Label maps become one-hot probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.errors import InputError
from uqseg_cli.io.geometry import from_nifti_order, reorient, same_grid, to_nifti_order
from uqseg_cli.io.readers import IMAGE_SUFFIXES, NIFTI_SUFFIXES, case_id_of, file_suffix

KINDS = ("auto", "probabilities", "labels")
RASTER_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s not in (".jpg", ".jpeg"))  # lossy JPEG is no label map
PRED_SUFFIXES = (".npz", *NIFTI_SUFFIXES, *RASTER_SUFFIXES)
SUM_TOL = 0.02  # float16 probabilities sum to 1 within this


@dataclass
class ExternalPrediction:
    """A prediction on the image grid: ``probabilities`` (K, *spatial) float32 in uqseg axis order."""

    probabilities: np.ndarray
    kind: str  # "probabilities" or "labels"
    format: str  # "nnunet-npz", "nifti", "raster", "mask-folder"
    segmentation: np.ndarray | None = None  # the tool's own label map, when it wrote one
    class_names: list[str] | None = None
    affine_matches: bool | None = None  # None: the file holds no geometry to compare
    argmax_agreement: float | None = None  # fraction of voxels where the tool's segmentation = argmax of probs


def prediction_index(folder: Path | str) -> dict[str, Path]:
    """Case id → prediction file (or per-case folder) in ``folder``; ``.npz`` wins over NIfTI over rasters."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: prediction folder not found")
    rank = {s: i for i, s in enumerate(PRED_SUFFIXES)}
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            cid, r = p.name, len(PRED_SUFFIXES)
        elif file_suffix(p) in rank:
            cid, r = case_id_of(p), rank[file_suffix(p)]
        else:
            continue
        old = found.get(cid)
        old_r = len(PRED_SUFFIXES) if old is None or old.is_dir() else rank[file_suffix(old)]
        if old is None or r < old_r:
            found[cid] = p
    return found


def match_predictions(folder: Path | str, case_ids: Sequence[str]) -> dict[str, Path]:
    """The prediction of every case, or one error naming the cases without one."""
    index = prediction_index(folder)
    missing = [c for c in case_ids if c not in index]
    if missing:
        raise InputError(
            f"{folder}: no prediction for case(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"(expected <case>.npz, <case>.nii.gz, <case>.png or a folder <case>/)"
        )
    return {c: index[c] for c in case_ids}


def one_hot(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """(K, *spatial) float32 one-hot of an integer label map; labels ≥ K are an error naming the fix."""
    top = int(labels.max(initial=0))
    if top >= num_classes:
        raise InputError(f"{where}: label {top} found but only {num_classes} classes (pass --num-classes {top + 1})")
    out = np.zeros((num_classes, *labels.shape), dtype=np.float32)
    for k in range(num_classes):
        out[k] = labels == k
    return out


def _labels_or_probability(data: np.ndarray, kind: str, scale: float, where: str) -> tuple[str, np.ndarray]:
    """Decide how a one-channel map reads: ("labels", int labels) or ("probabilities", p in [0, 1])."""
    if not np.all(np.isfinite(data)):
        raise InputError(f"{where}: holds NaN or infinite values")
    integral = data.dtype.kind in "iub" or bool(np.all(data == np.round(data)))
    if kind == "auto":
        values = np.unique(data) if integral else None
        if integral and values is not None and values.size <= 2 and values.max(initial=0) == scale == 255:
            return "labels", (data > 0).astype(np.uint8)  # a 0/255 binary mask
        if integral and (scale == 1.0 or int(data.max(initial=0)) < 32):
            kind = "labels"
        else:
            kind = "probabilities"
    if kind == "labels":
        if not integral or data.min(initial=0) < 0:
            raise InputError(f"{where}: not an integer label map (use --kind probabilities for soft maps)")
        values = np.unique(data)
        if values.size <= 2 and values.max(initial=0) == 255:
            return "labels", (data > 0).astype(np.uint8)
        return "labels", data.astype(np.int64)
    p = data.astype(np.float32) / np.float32(scale)
    if p.min(initial=0.0) < -1e-6 or p.max(initial=0.0) > 1 + 1e-6:
        raise InputError(
            f"{where}: values {float(data.min())}..{float(data.max())} are not probabilities in [0, 1]"
            + ("" if scale == 1.0 else f" (after / {scale:g})")
        )
    return "probabilities", np.clip(p, 0.0, 1.0)


def _finish(kind: str, data: np.ndarray, num_classes: int | None, where: str) -> tuple[str, np.ndarray]:
    """One-channel labels/probability → (K, *spatial) probabilities."""
    if kind == "labels":
        k = num_classes or max(2, int(data.max(initial=0)) + 1)
        return kind, one_hot(data, k, where)
    if num_classes not in (None, 2):
        raise InputError(f"{where}: a one-channel probability map is binary, but {num_classes} classes were asked")
    return kind, np.stack([1.0 - data, data]).astype(np.float32)


def _check_sum(p: np.ndarray, where: str) -> None:
    s = p.sum(axis=0, dtype=np.float32)
    bad = float(np.abs(s - 1.0).max(initial=0.0))
    if not np.isfinite(bad) or bad > SUM_TOL:
        raise InputError(
            f"{where}: class probabilities do not sum to 1 (off by up to {bad:.3g}); logits, or sigmoid "
            "(region-based) outputs, are not supported"
        )


def _align(data_xyz: np.ndarray, affine: np.ndarray | None, image_affine: np.ndarray | None, channels: bool,
           ndim: int) -> tuple[np.ndarray, bool | None]:
    """NIfTI-ordered data (+ trailing channel axis) onto the image orientation; returns uqseg-ordered data."""
    match = None
    if affine is not None and image_affine is not None:
        if ndim == 3:
            data_xyz, affine = reorient(data_xyz, affine, image_affine)
        match = same_grid(affine, image_affine)
    return from_nifti_order(data_xyz, channels=channels), match


def _read_npz(path: Path, shape: tuple[int, ...], image_affine, num_classes, where) -> ExternalPrediction:
    from uqseg_cli.io.nnunet import properties_affine, read_npz_probabilities, read_properties

    probs = read_npz_probabilities(path).astype(np.float32)
    if len(shape) == 2 and probs.ndim == 4 and probs.shape[1] == 1:
        probs = probs[:, 0]  # nnU-Net keeps 2D cases as (K, 1, y, x)
    pkl = path.with_suffix(".pkl")
    seg_path = next((path.with_name(case_id_of(path) + s) for s in NIFTI_SUFFIXES + RASTER_SUFFIXES
                     if path.with_name(case_id_of(path) + s).is_file()), None)
    affine, seg_affine = None, None
    if pkl.is_file():
        affine, _ = properties_affine(read_properties(pkl))
    seg = None
    if seg_path is not None:
        seg, _, seg_affine = _read_labels_file(seg_path, len(shape), image_affine, where)
        if affine is None:
            affine = seg_affine
    _check_sum(probs, where)
    match = None
    if affine is not None and len(shape) == 3:
        probs, match = _align(to_nifti_order(probs, channels=True), affine, image_affine, True, 3)
    elif affine is not None and image_affine is not None:
        match = same_grid(affine, image_affine)
    if tuple(probs.shape[1:]) != tuple(shape):
        raise InputError(f"{where}: probabilities of grid {tuple(probs.shape[1:])}, the image has {tuple(shape)}")
    if num_classes is not None and probs.shape[0] != num_classes:
        raise InputError(f"{where}: {probs.shape[0]} classes, expected {num_classes}")
    if seg is not None and tuple(seg.shape) != tuple(shape):
        raise InputError(f"{where}: {seg_path.name} of grid {tuple(seg.shape)}, the image has {tuple(shape)}")
    agree = None
    if seg is not None:  # nnU-Net's segmentation is the argmax of these probabilities: a flipped axis shows here
        agree = float(np.mean(seg == probs.argmax(0)))
    return ExternalPrediction(probs, "probabilities", "nnunet-npz", seg, None, match, agree)


def _read_labels_file(path: Path, ndim: int, image_affine, where):
    """(integer label map on the image orientation in uqseg order, grid match, the file's own affine or None)."""
    if file_suffix(path) in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            raise InputError(f"{where}: {path.name}: cannot read NIfTI: {exc}") from None
        while data.ndim > ndim and data.shape[-1] == 1:
            data = data[..., 0]
        data, match = _align(data, img.affine, image_affine, False, ndim)
        return np.asarray(data).astype(np.int64), match, np.asarray(img.affine, dtype=np.float64)
    from uqseg_cli.io.readers import read_image

    arr, _ = read_image(path)
    return arr[0].astype(np.int64), None, None


def _read_nifti(path: Path, shape, image_affine, kind, num_classes, where) -> ExternalPrediction:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"{where}: cannot read NIfTI: {exc}") from None
    ndim = len(shape)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0]  # ITK vector image (x, y, z, 1, K)
    if ndim == 2 and data.ndim >= 3 and data.shape[2] == 1:
        data = data[:, :, 0]  # one-slice volume, maybe with channels after it
    while data.ndim > ndim + 1 or (data.ndim == ndim + 1 and data.shape[-1] == 1):
        if data.shape[-1] != 1:
            raise InputError(f"{where}: NIfTI of shape {data.shape} for a {ndim}D image")
        data = data[..., 0]
    if data.ndim == ndim + 1:  # channels last (MONAI)
        probs, match = _align(np.asarray(data, dtype=np.float32), img.affine, image_affine, True, ndim)
        _check_sum(probs, where)
        kind_out = "probabilities"
    elif data.ndim == ndim:
        k, d = _labels_or_probability(np.asarray(data), kind, 1.0, where)
        d, match = _align(d, img.affine, image_affine, False, ndim)
        kind_out, probs = _finish(k, d, num_classes, where)
    else:
        raise InputError(f"{where}: NIfTI of shape {data.shape} for a {ndim}D image")
    if tuple(probs.shape[1:]) != tuple(shape):
        raise InputError(f"{where}: prediction of grid {tuple(probs.shape[1:])}, the image has {tuple(shape)}")
    if num_classes is not None and probs.shape[0] != num_classes:
        raise InputError(f"{where}: {probs.shape[0]} classes, expected {num_classes}")
    return ExternalPrediction(probs, kind_out, "nifti", None, None, match)


def _read_raster(path: Path, shape, kind, num_classes, where) -> ExternalPrediction:
    from uqseg_cli.io.readers import read_image, value_scale_for

    arr, _ = read_image(path)
    if arr.shape[0] > 1:
        if not np.all(arr == arr[:1]):
            raise InputError(f"{where}: {arr.shape[0]} differing colour channels; expected a grey map")
    if len(shape) != 2 or tuple(arr.shape[1:]) != tuple(shape):
        raise InputError(f"{where}: map of size {tuple(arr.shape[1:])}, the image has {tuple(shape)}")
    k, d = _labels_or_probability(arr[0], kind, value_scale_for(arr.dtype), where)
    kind_out, probs = _finish(k, d, num_classes, where)
    return ExternalPrediction(probs, kind_out, "raster", None, None, None)


def _read_mask_folder(folder: Path, shape, image_affine, class_names, num_classes, where) -> ExternalPrediction:
    files = {case_id_of(p): p for p in sorted(folder.iterdir())
             if p.is_file() and file_suffix(p) in NIFTI_SUFFIXES + RASTER_SUFFIXES}
    if not files:
        raise InputError(f"{where}: folder {folder} holds no masks")
    if class_names:
        names = list(class_names[1:])
        missing = [n for n in names if n not in files]
        if missing:
            raise InputError(f"{where}: no mask {missing[0]}.* in {folder} (class names from --class-names)")
    else:
        names = sorted(files)
    labels = np.zeros(shape, dtype=np.int64)
    match = None
    for k, name in enumerate(names, start=1):
        m, ok, _ = _read_labels_file(files[name], len(shape), image_affine, where)
        if tuple(m.shape) != tuple(shape):
            raise InputError(f"{where}: {files[name].name} of grid {tuple(m.shape)}, the image has {tuple(shape)}")
        labels[m > 0] = k
        if ok is not None:
            match = ok if match is None else (match and ok)
    k = len(names) + 1
    if num_classes is not None and num_classes != k:
        raise InputError(f"{where}: {len(names)} structure masks make {k} classes, expected {num_classes}")
    return ExternalPrediction(one_hot(labels, k, where), "labels", "mask-folder", labels.astype(np.uint8),
                              ["background", *names], match)


def read_prediction(
    path: Path | str,
    shape: Sequence[int],
    *,
    image_affine: np.ndarray | None = None,
    kind: str = "auto",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    case_id: str = "",
) -> ExternalPrediction:
    """Read one case's prediction onto the image grid ``shape`` (uqseg order) and orientation ``image_affine``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    where = f"{path}" + (f" (case {case_id})" if case_id else "")
    if path.is_dir():
        return _read_mask_folder(path, shape, image_affine, list(class_names or []), num_classes, where)
    suf = file_suffix(path)
    if suf == ".npz":
        return _read_npz(path, shape, image_affine, num_classes, where)
    if suf in NIFTI_SUFFIXES:
        return _read_nifti(path, shape, image_affine, kind, num_classes, where)
    if suf in RASTER_SUFFIXES:
        return _read_raster(path, shape, kind, num_classes, where)
    raise InputError(f"{where}: unsupported prediction file (expected {', '.join(PRED_SUFFIXES)} or a folder)")
