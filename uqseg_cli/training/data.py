"""Training data: train/validation splits and folds, 2D images resized to the model grid (streamed from disk with
a bounded cache) and random 3D patches (half of them centred on a foreground voxel)."""


from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.readers import NIFTI_SUFFIXES, Case, file_suffix
from uqseg_cli.models.base import SegModel
from uqseg_cli.models.preprocessing import (
    Preprocessing,
    adapt_channels,
    geometry_2d,
    normalise,
    pad_values,
    to_model_2d,
)
from uqseg_cli.rng import case_seed

VAL_SPLITS = {"val", "valid", "validation"}
TRAIN_SPLITS = {"train", "training", ""}
STREAM_CACHE_BYTES = 64 << 20  # prepared 2D training samples kept in memory (PH2 fits); the rest are remade when drawn


def infer_modality(cases: Sequence[Case]) -> str:
    """``ct`` when any image is a NIfTI file or holds floating-point intensities, else ``photo``."""
    for c in cases:
        if file_suffix(c.source) in NIFTI_SUFFIXES or np.issubdtype(c.image.dtype, np.floating):
            return "ct"
    return "photo"


def data_fingerprint(cases: Sequence[Case]) -> str:
    """sha256 (32 hex digits) of case ids, image and mask bytes, in case-id order."""
    h = hashlib.sha256()
    for c in sorted(cases, key=lambda c: c.id):
        h.update(c.id.encode() + b"\x00")
        h.update(str((c.image.shape, str(c.image.dtype))).encode())
        h.update(np.ascontiguousarray(c.image).tobytes())
        if c.mask is not None:
            h.update(np.ascontiguousarray(c.mask).tobytes())
    return h.hexdigest()[:32]


def default_input_size_2d(shapes: Sequence[Sequence[int]], model: SegModel, max_side: int) -> list[int]:
    """Median (H, W) of the training images scaled so the longer side is at most ``max_side``, rounded to the
    nearest multiple of the model's size multiple (or the model's fixed size). PH2 (288x383) → 192x256."""
    if model.fixed_input_size is not None:
        return list(model.fixed_input_size)
    hw = np.median(np.array([s[-2:] for s in shapes], dtype=float), axis=0)
    s = min(1.0, max_side / hw.max())
    m = model.size_multiple
    return [int(max(m, round(v * s / m) * m)) for v in hw]


def split_train_val(cases: Sequence[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """A manifest ``split`` column wins (``val``/``validation`` → validation, ``train`` or empty → training, other
    values such as ``test`` are left out); otherwise a seeded random ``val_fraction`` of the cases (at least one
    when the fraction is positive and two or more cases exist)."""
    splits = [str(c.meta.get("split", "") or "").strip().lower() for c in cases]
    if any(splits):
        train = [c for c, s in zip(cases, splits, strict=True) if s in TRAIN_SPLITS]
        val = [c for c, s in zip(cases, splits, strict=True) if s in VAL_SPLITS]
        return train, val
    if val_fraction <= 0 or len(cases) < 2:
        return list(cases), []
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    order = np.random.default_rng(case_seed(seed, "split", "train")).permutation(len(cases))
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val_idx], [c for i, c in enumerate(cases) if i in val_idx]


def assign_folds(case_ids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """Seeded split of ``case_ids`` into ``k`` folds of near-equal size (each sorted)."""
    if k < 2 or k > len(case_ids):
        raise UqsegError(f"--folds {k}: need 2 <= folds <= number of training cases ({len(case_ids)})")
    ids = sorted(case_ids)
    # Not sklearn.model_selection.KFold(shuffle=True): it shuffles with the legacy RandomState and cuts contiguous
    # blocks, so the same seed would give other folds; each member's held-out cases are recorded in its checkpoint
    # (``fold_case_ids``) and a rerun with the same seed must deal the same folds.
    order = np.random.default_rng(case_seed(seed, "folds", "train")).permutation(len(ids))
    return [sorted(ids[i] for i in order[f::k]) for f in range(k)]


def slices_2d(
    cases: Sequence[Case], prep: Preprocessing, empty_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """All training samples of a 2D model on the model grid: images (M, C, h, w) float16 and labels (M, h, w)
    uint8. Volumes contribute their axial slices: every slice with foreground, and ``empty_fraction`` times as many
    empty ones (drawn with ``rng``)."""
    xs, ys = [], []
    pad = pad_values(prep)
    for c in cases:
        img = adapt_channels(c.image, prep.channels, f"case {c.id}")
        if img.ndim == 3:
            items = [(img, c.mask)]
        else:
            fg = [z for z in range(img.shape[1]) if c.mask[z].any()]
            empty = [z for z in range(img.shape[1]) if not c.mask[z].any()]
            n_empty = min(len(empty), math.ceil(empty_fraction * max(1, len(fg))))
            keep = sorted(fg + list(rng.choice(empty, n_empty, replace=False) if n_empty else []))
            items = [(img[:, z], c.mask[z]) for z in keep]
        for im, m in items:
            x, y = _item_2d(im, m, prep, pad)
            xs.append(x)
            ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def _item_2d(
    im: np.ndarray, m: np.ndarray, prep: Preprocessing, pad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training sample on the model grid: image (C, h, w) float16, labels (h, w) uint8."""
    geo = geometry_2d(im.shape[1:], prep.input_size, prep.resize)
    x = to_model_2d(normalise(im, prep)[None], geo, pad)[0].half()
    lab = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    if tuple(lab.shape[-2:]) != geo.inner:
        lab = F.interpolate(lab, size=geo.inner, mode="nearest-exact")
    full = torch.zeros(1, 1, *geo.model)
    oy, ox = geo.offset
    full[..., oy : oy + geo.inner[0], ox : ox + geo.inner[1]] = lab
    return x, full[0, 0].to(torch.uint8)


class StreamedImages:
    """The training samples of 2D images, made on demand from the cases (which may stay on disk, see
    `uqseg_cli.io.streaming`) instead of all at once: the same values as `slices_2d` for images, with memory bounded
    by ``cache_bytes`` of prepared samples (the first ones made are kept; the rest are remade when drawn)."""

    def __init__(self, cases: Sequence[Case], prep: Preprocessing, cache_bytes: int = STREAM_CACHE_BYTES) -> None:
        self.cases = list(cases)
        self.prep = prep
        self.pad = pad_values(prep)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._held = 0

    def __len__(self) -> int:
        return len(self.cases)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        c = self.cases[i]
        x, y = _item_2d(adapt_channels(c.image, self.prep.channels, f"case {c.id}"), c.mask, self.prep, self.pad)
        size = x.numel() * x.element_size() + y.numel() * y.element_size()
        if self._held + size <= self.cache_bytes:
            self._cache[i] = (x, y)
            self._held += size
        return x, y

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, C, h, w) float32 and labels (n, h, w) int64 of the samples ``idx`` (as ``X[idx].float()``)."""
        items = [self.item(int(i)) for i in idx]
        return torch.stack([x for x, _ in items]).float(), torch.stack([y for _, y in items]).long()


def sample_patches(
    vols: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    n: int,
    patch: Sequence[int],
    pad: torch.Tensor,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random patches (n, C, *patch) and labels (n, *patch) int64 from normalised volumes (C, D, H, W);
    every other patch is centred on a random foreground voxel (when the volume has one). Outside the volume:
    ``pad`` intensities and background labels."""
    C = vols[0].shape[0]
    xs = pad.view(1, C, 1, 1, 1).expand(n, C, *patch).clone()
    ys = torch.zeros(n, *patch, dtype=torch.long)
    for i in range(n):
        v = int(torch.randint(len(vols), (1,), generator=g))
        vol, lab = vols[v], labels[v]
        shape = vol.shape[1:]
        fg = None
        if i % 2 == 0:
            nz = torch.nonzero(lab)
            if len(nz):
                fg = nz[int(torch.randint(len(nz), (1,), generator=g))]
        if fg is None:
            fg = torch.stack([torch.randint(max(1, s), (1,), generator=g)[0] for s in shape])
        starts = [int(c) - p // 2 for c, p in zip(fg, patch, strict=True)]
        src, dst = [], []
        for s0, p, L in zip(starts, patch, shape, strict=True):
            lo, hi = max(0, s0), min(L, s0 + p)
            src.append(slice(lo, hi))
            dst.append(slice(lo - s0, hi - s0))
        xs[(i, slice(None), *dst)] = vol[(slice(None), *src)]
        ys[(i, *dst)] = lab[tuple(src)].long()
    return xs, ys


# -- loss, metric -------------------------------------------------------------------------------------------------
def check_training_cases(cases: Sequence[Case]) -> tuple[int, int, int]:
    """Validate the cases (masks present, same spatial dims and channels). Returns (dims, channels, classes)."""
    if not cases:
        raise InputError("no training cases")
    missing = [c.id for c in cases if c.mask is None]
    if missing:
        raise InputError(f"training needs a mask for every case; missing for {', '.join(missing[:5])} (use --masks)")
    dims = {c.ndim for c in cases}
    if len(dims) > 1:
        raise InputError("training cases mix 2D images and 3D volumes")
    chans = {c.image.shape[0] for c in cases}
    channels = max(chans)
    for c in cases:
        adapt_channels(c.image, channels, f"{c.source} (case {c.id})")
    classes = max(2, max(int(c.mask.max()) for c in cases) + 1)
    return dims.pop(), channels, classes


def without_split(c: Case) -> Case:
    if "split" not in c.meta:
        return c
    if hasattr(c, "with_meta"):  # a StreamedCase stays on disk
        return c.with_meta({k: v for k, v in c.meta.items() if k != "split"})
    return Case(c.id, c.image, c.spacing, c.mask, c.raters, c.source, {k: v for k, v in c.meta.items() if k != "split"})
