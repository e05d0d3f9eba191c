"""nnU-Net v2 files: the raw dataset layout as input, and ``--save_probabilities`` outputs.

Raw layout (``nnUNet_raw/DatasetXXX_Name``): ``imagesTr/<case>_0000.nii.gz`` (+ ``_0001`` … one file per input
channel), ``labelsTr/<case>.nii.gz``, ``imagesTs/<case>_0000.nii.gz``; ``dataset.json`` names the labels.
A folder is read as this layout when it is named ``imagesTr``/``imagesTs``/``imagesTe`` (or holds them), when a
``dataset.json`` sits next to it, or when every image file in it ends in ``_0000`` (one channel). The case id is
the file name without the ``_XXXX`` channel suffix.

Outputs of ``nnUNetv2_predict --save_probabilities``: ``<case>.npz`` with ``probabilities`` ``(K, *spatial)``
float16 in nnU-Net's array order, which is SimpleITK's: the NIfTI ``(x, y, z)`` axes reversed to ``(z, y, x)`` —
the same order uqseg uses — and for 2D inputs ``(K, 1, y, x)``; ``<case>.pkl`` with the properties (geometry in
``sitk_stuff`` {spacing, origin, direction} for SimpleITKIO, ``nibabel_stuff`` {original_affine[, reoriented_affine]}
for the nibabel readers; with ``NibabelIOWithReorient`` the arrays are in the RAS-reoriented orientation); and the
segmentation ``<case>.nii.gz``. The ``.pkl`` is read with an unpickler that only builds plain data and numpy
arrays: a file from elsewhere cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.errors import InputError
from uqseg_cli.io.readers import ALL_SUFFIXES, case_id_of, file_suffix

CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
RAW_IMAGE_FOLDERS = ("imagesTr", "imagesTs", "imagesTe")


# ----------------------------------------------------------------------------------------------- raw layout
@dataclass(frozen=True)
class RawLayout:
    """Images of an nnU-Net raw folder: per case id, the channel files in channel order; labels folder if any."""

    images: dict[str, tuple[Path, ...]]
    labels: Path | None
    folder: Path


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and file_suffix(p) in ALL_SUFFIXES
    )


def raw_layout(src: Path) -> RawLayout | None:
    """The nnU-Net raw layout at ``src`` (a dataset folder or its ``imagesTr``/``imagesTs``), or None."""
    src = Path(src)
    if not src.is_dir():
        return None
    folder = src
    if src.name not in RAW_IMAGE_FOLDERS:
        inner = [src / n for n in RAW_IMAGE_FOLDERS if (src / n).is_dir()]
        if inner and not _image_files(src):
            if len(inner) > 1 and (src / "imagesTr").is_dir():
                folder = src / "imagesTr"
            else:
                folder = inner[0]
    files = _image_files(folder)
    if not files:
        return None
    named = folder.name in RAW_IMAGE_FOLDERS or (folder.parent / "dataset.json").is_file() or (
        folder / "dataset.json"
    ).is_file()
    stems = [case_id_of(p) for p in files]
    matches = [CHANNEL_RE.match(s) for s in stems]
    if not all(matches):
        if named:
            bad = next(p.name for p, m in zip(files, matches, strict=True) if not m)
            raise InputError(f"{folder}: {bad}: nnU-Net image files are named <case>_XXXX (channel), e.g. case_0000")
        return None
    if not named and not all(m.group("channel") == "0000" for m in matches):
        return None
    channels: dict[str, dict[int, Path]] = {}
    for p, m in zip(files, matches, strict=True):
        cid, ch = m.group("case"), int(m.group("channel"))
        if ch in channels.setdefault(cid, {}):
            raise InputError(f"{folder}: case {cid!r} channel {ch:04d} appears twice")
        channels[cid][ch] = p
    images: dict[str, tuple[Path, ...]] = {}
    counts = set()
    for cid, chans in sorted(channels.items()):
        if sorted(chans) != list(range(len(chans))):
            raise InputError(
                f"{folder}: case {cid!r} has channels {', '.join(f'{c:04d}' for c in sorted(chans))}; "
                f"expected _0000 to _{len(chans) - 1:04d}"
            )
        images[cid] = tuple(chans[c] for c in range(len(chans)))
        counts.add(len(chans))
    if len(counts) > 1:
        raise InputError(f"{folder}: cases have different numbers of channels ({', '.join(map(str, sorted(counts)))})")
    labels = folder.parent / folder.name.replace("images", "labels", 1) if folder.name in RAW_IMAGE_FOLDERS else None
    return RawLayout(images, labels if labels is not None and labels.is_dir() else None, folder)


def stack_channels(first: np.ndarray, spacing: tuple[float, ...], others: tuple[Path, ...], case_id: str,
                   reader) -> np.ndarray:
    """The image of a multi-channel case: channel files read with ``reader`` and stacked along axis 0; every
    channel must share the grid (shape and spacing) of ``_0000``."""
    parts = [first]
    for p in others:
        arr, sp = reader(p, case_id)
        if arr.shape[1:] != first.shape[1:] or not np.allclose(sp, spacing, rtol=1e-4):
            raise InputError(
                f"{p} (case {case_id}): channel grid {arr.shape[1:]} / spacing {tuple(sp)} differs from "
                f"channel 0000 {first.shape[1:]} / {tuple(spacing)}"
            )
        parts.append(arr.astype(first.dtype, copy=False))
    return np.concatenate(parts, axis=0)


def check_model_channels(specs, channels: int, model: str) -> None:
    """One clear error when multi-channel nnU-Net cases meet a model that takes another number of channels."""
    from uqseg_cli.errors import UqsegError

    multi = [s for s in specs if getattr(s, "channels", ())]
    if not multi:
        return
    c = 1 + len(multi[0].channels)
    if c != channels:
        raise UqsegError(
            f"{multi[0].image.parent}: nnU-Net cases have {c} channels (_0000.._{c - 1:04d}) but {model} takes "
            f"{channels}; train a model on these channels (uqseg train -i {multi[0].image.parent}) or give one channel"
        )


# ----------------------------------------------------------------------------------------------- outputs
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.dtypes", "Float64DType"), ("numpy.dtypes", "Float32DType"), ("numpy.dtypes", "Int64DType"),
    ("collections", "OrderedDict"),
    ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
        return super().find_class(module, name)


def read_properties(path: Path | str) -> dict:
    """The properties dict of an nnU-Net ``<case>.pkl``, unpickled without running code."""
    path = Path(path)
    try:
        obj = _DataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: cannot read nnU-Net properties: {exc} (only plain data is loaded)") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: nnU-Net properties should be a dict, got {type(obj).__name__}")
    return obj


def properties_affine(props: dict) -> tuple[np.ndarray | None, bool]:
    """(affine of the arrays nnU-Net wrote, whether they are RAS-reoriented) from a properties dict.

    ``nibabel_stuff.reoriented_affine`` (NibabelIOWithReorient) wins, then ``original_affine`` (NibabelIO), then
    ``sitk_stuff`` (SimpleITKIO); None when the file holds no geometry (natural 2D images)."""
    from uqseg_cli.io.geometry import affine_from_sitk

    nib_stuff = props.get("nibabel_stuff")
    if isinstance(nib_stuff, dict):
        if nib_stuff.get("reoriented_affine") is not None:
            return np.asarray(nib_stuff["reoriented_affine"], dtype=np.float64), True
        if nib_stuff.get("original_affine") is not None:
            return np.asarray(nib_stuff["original_affine"], dtype=np.float64), False
    sitk = props.get("sitk_stuff")
    if isinstance(sitk, dict) and all(k in sitk for k in ("spacing", "origin", "direction")):
        return affine_from_sitk(sitk["spacing"], sitk["origin"], sitk["direction"]), False
    return None, False


def read_npz_probabilities(path: Path | str) -> np.ndarray:
    """``probabilities`` ``(K, *spatial)`` of an nnU-Net ``.npz`` (``softmax`` in older files), as stored."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("probabilities", "softmax", "probs") if k in z.files), None)
            if key is None:
                raise InputError(f"{path}: no 'probabilities' array (found {', '.join(z.files) or 'nothing'})")
            arr = z[key]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read npz: {exc}") from None
    if arr.ndim not in (3, 4) or arr.shape[0] < 2:
        raise InputError(f"{path}: probabilities of shape {arr.shape}; expected (K >= 2, *spatial)")
    return arr


def dataset_class_names(folder: Path | str) -> list[str] | None:
    """Class names ordered by label value from ``dataset.json`` in ``folder`` (nnU-Net copies it into its
    prediction folders), or None. Region-based label sets (lists of labels) are refused."""
    p = Path(folder) / "dataset.json"
    if not p.is_file():
        return None
    try:
        labels = json.loads(p.read_text()).get("labels")
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from None
    if not isinstance(labels, dict) or not labels:
        return None
    labels = {k: v for k, v in labels.items() if k != "ignore"}  # nnU-Net's ignore label is never predicted
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values()):
        raise InputError(
            f"{p}: region-based labels (overlapping sigmoid outputs) are not class probabilities; uqseg needs "
            "softmax outputs that sum to 1 over the classes"
        )
    by_value = {int(v[0] if isinstance(v, (list, tuple)) else v): str(k) for k, v in labels.items()}
    if sorted(by_value) != list(range(len(by_value))):
        return None
    return [by_value[i] for i in range(len(by_value))]
