"""The CNN regressors' input: channels read from one case, resampled to a fixed grid and standardised.

Channels by framework (in this order):

- ``seg-unc`` (framework 1): the predicted segmentation as one binary channel per foreground class, then one
  uncertainty map per measure (in the uncertainty direction, ``1 - confidence`` for confidence);
- ``img-seg-unc`` (framework 2): the image channels first, then the same;
- ``hybrid``: the channels of ``img-seg-unc``; the aggregated features join the CNN embedding before the head
  (:class:`~uqseg_cli.quality.models.QualityRegressor` with ``n_extra``);
- ``critic``: the channels of ``img-seg-unc``, segmented by a critic network (quality/critic.py);
- every CNN framework, where ``samples.h5`` holds vote counts: the foreground *agreement map* of the method last
  (``agree:<method>``: the fraction of the T sampled segmentations that call the voxel foreground).

Every channel is resampled to ``meta.input_size`` (bilinear with antialiasing in 2D, trilinear in 3D) and
standardised with the per-channel mean and std of the training inputs stored in ``meta`` ("feature statistics").
:func:`build_inputs` is exactly what the regressor sees, so Grad-CAM (``uqseg explain``) can run on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import CaseError
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.regions import uncertainty_direction

FRAMEWORKS_CNN = ("seg-unc", "img-seg-unc", "hybrid")
"""The CNN regressors (one network, one Dice out)."""
IMAGE_FRAMEWORKS = ("img-seg-unc", "hybrid", "critic")
FRAMEWORKS_INPUT = (*FRAMEWORKS_CNN, "critic")
"""Every framework whose network reads the channels of this module (the critic segments them: quality/critic.py)."""
FRAMEWORKS = (*FRAMEWORKS_INPUT, "features")


def channel_names(
    framework: str, image_channels: int, num_classes: int, measures: Sequence[str], agreement: str | None = None
) -> list[str]:
    """Names of the input channels, e.g. ``["image:0", "image:1", "image:2", "seg:1", "unc:entropy",
    "agree:tta"]`` (``agreement``: the method whose vote fraction is the last channel, or None)."""
    if framework not in FRAMEWORKS_INPUT:
        raise ValueError(f"framework {framework!r} has no CNN input (expected one of {', '.join(FRAMEWORKS_INPUT)})")
    names = [f"image:{c}" for c in range(image_channels)] if framework in IMAGE_FRAMEWORKS else []
    names += [f"seg:{k}" for k in range(1, max(int(num_classes), 2))]
    names += [f"unc:{m}" for m in measures]
    if agreement:
        names.append(f"agree:{agreement}")
    return names


def seg_channels(meta: QualityMeta) -> list[int]:
    """Indices of the ``seg:<k>`` channels (one per foreground class, in class order)."""
    return [i for i, c in enumerate(meta.channels) if c.startswith("seg:")]


def agreement_map(view, method: str) -> np.ndarray:
    """Foreground vote fraction ``(T - votes[0]) / T`` of ``method`` in one case, float32 ``(*spatial)``."""
    T = int(view.dataset(f"{method}/volumes").shape[0])
    votes0 = np.asarray(view.get(f"{method}/votes")[0], dtype=np.float32)
    return (T - votes0) / np.float32(T)


def load_channels(view, meta: QualityMeta) -> np.ndarray:
    """Raw channels of one case (a ``CaseView`` of ``uncertainty.h5``) at the original resolution.

    Returns float32 ``(C, *spatial)`` in the order of ``meta.channels``. Raises :class:`CaseError` naming the case
    and the missing array or wrong shape.
    """
    method = meta.method
    try:
        seg = np.asarray(view.get("segmentation"))
        image = None
        out: list[np.ndarray] = []
        for name in meta.channels:
            kind, _, arg = name.partition(":")
            if kind == "image":
                if image is None:
                    image = np.asarray(view.get("image"), dtype=np.float32)
                    if image.ndim == seg.ndim:  # a single-channel image stored without its channel axis
                        image = image[None]
                out.append(image[int(arg)])
            elif kind == "seg":
                out.append((seg == int(arg)).astype(np.float32))
            elif kind == "unc":
                out.append(uncertainty_direction(arg, view.get(f"{method}/{arg}")).astype(np.float32))
            elif kind == "agree":
                out.append(agreement_map(view, arg))
            else:
                raise ValueError(f"unknown channel {name!r}")
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(f"{view.file.path}: case {view.id}: cannot build the regressor input: {exc}") from None
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise CaseError(f"{view.file.path}: case {view.id}: channels have different shapes {sorted(shapes)}")
    if len(seg.shape) != int(meta.dims):
        raise CaseError(
            f"{view.file.path}: case {view.id}: a {len(seg.shape)}-D case for a {meta.dims}-D quality model"
        )
    return np.stack(out).astype(np.float32, copy=False)


def resample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample channels ``(C, *spatial)`` (or a batch ``(N, C, *spatial)``) to ``size``: bilinear with antialias
    in 2D, trilinear in 3D."""
    single = x.ndim == len(size) + 1
    xb = x[None] if single else x
    size = tuple(int(s) for s in size)
    if tuple(xb.shape[2:]) != size:
        if len(size) == 2:
            xb = F.interpolate(xb, size=size, mode="bilinear", align_corners=False, antialias=True)
        else:
            xb = F.interpolate(xb, size=size, mode="trilinear", align_corners=False)
    return xb[0] if single else xb


def standardize(x: torch.Tensor, meta: QualityMeta) -> torch.Tensor:
    """``(x - mean_c) / std_c`` with the stored per-channel statistics; ``x``: ``(C, *s)`` or ``(N, C, *s)``."""
    c_axis = 0 if x.ndim == len(meta.input_size) + 1 else 1
    shape = [1] * x.ndim
    shape[c_axis] = -1
    mean = torch.tensor(meta.channel_mean, dtype=x.dtype).reshape(shape)
    std = torch.tensor(meta.channel_std, dtype=x.dtype).reshape(shape)
    return (x - mean) / std


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population; a zero std becomes 1) of a batch ``(N, C, *spatial)``."""
    dims = [0, *range(2, x.ndim)]
    xd = x.double()
    mean = xd.mean(dim=dims)
    std = xd.std(dim=dims, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def raw_inputs(view, meta: QualityMeta) -> torch.Tensor:
    """Channels of one case resampled to the fixed grid, not yet standardised: ``(C, *input_size)`` float32."""
    return resample(torch.from_numpy(load_channels(view, meta)), meta.input_size)


def build_inputs(view, meta: QualityMeta) -> torch.Tensor:
    """The regressor's input for one case: ``(C, *input_size)`` float32, resampled and standardised."""
    return standardize(raw_inputs(view, meta), meta)
