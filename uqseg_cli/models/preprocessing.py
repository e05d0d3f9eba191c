"""Preprocessing recorded in every checkpoint: intensity normalisation and the map to and from the model grid.

Pure functions on arrays/tensors. Intensities: photos are divided by ``value_scale`` (255 for uint8) to [0, 1];
CT is clipped to ``intensity_window`` (HU) and mapped linearly to [0, 1]; then per-channel ``(x - mean) / std``.
Geometry (2D models): ``stretch`` resizes the image to ``input_size`` (H, W); ``letterbox`` scales it keeping the
aspect ratio and pads the rest with the normalised value of intensity 0. Logits come back through the inverse map
(crop the padding, bilinear resize to the original grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import InputError

MODALITIES = ("photo", "ct")
RESIZE_MODES = ("stretch", "letterbox")
DEFAULT_CT_WINDOW = (-200.0, 300.0)


@dataclass
class Preprocessing:
    """How raw images become model inputs. All fields are plain JSON types (stored in the checkpoint).

    - ``modality``: ``photo`` or ``ct``; ``channels``: model input channels.
    - ``input_size``: 2D models: the model grid (H, W); 3D model: the inference tile (D, H, W).
    - ``resize``: ``stretch`` or ``letterbox`` (2D only).
    - ``value_scale``: photos are divided by it (255 for uint8, 65535 for uint16, 1 for float).
    - ``intensity_window``: CT [lo, hi] in HU, clipped and mapped to [0, 1]; None for photos.
    - ``mean``/``std``: per-channel statistics of the [0, 1] intensities (of the training images).
    - ``halo``: 3D tiles: voxels of context on each side of the region a tile predicts.
    """

    modality: str = "photo"
    channels: int = 3
    input_size: list[int] = field(default_factory=lambda: [256, 256])
    resize: str = "stretch"
    value_scale: float = 255.0
    intensity_window: list[float] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    halo: int = 16

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} values, got {len(self.mean)}/{len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if self.intensity_window is not None and not self.intensity_window[0] < self.intensity_window[1]:
            raise ValueError(f"intensity window must be [lo, hi] with lo < hi, got {self.intensity_window}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def adapt_channels(image: np.ndarray, channels: int, where: str = "image") -> np.ndarray:
    """Match the channel count: grey → repeated to 3, RGBA → RGB; other mismatches are an `InputError`.

    ``image`` (C, *spatial) → (channels, *spatial) (a view when nothing changes)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    if c == 4 and channels == 3:
        return image[:3]
    raise InputError(f"{where}: has {c} channel(s), the model expects {channels}")


def to_unit(image: np.ndarray | torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Intensities to [0, 1] (photos: / value_scale; CT: window clip and linear map). Returns float32 tensor."""
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    if prep.intensity_window is not None:
        lo, hi = (float(v) for v in prep.intensity_window)
        return (x.clamp(lo, hi) - lo) / (hi - lo)
    return x / float(prep.value_scale)


def normalise(image: np.ndarray | torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """``image`` (C, *spatial) raw intensities → float32 (C, *spatial) ``(to_unit(x) - mean) / std``."""
    x = to_unit(image, prep)
    shape = (-1,) + (1,) * (x.dim() - 1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(prep.std, dtype=torch.float32).view(shape)
    return (x - mean) / std


def pad_values(prep: Preprocessing) -> torch.Tensor:
    """Per-channel normalised value of raw intensity "0 on the unit scale" (black / below the CT window)."""
    return -torch.tensor(prep.mean, dtype=torch.float32) / torch.tensor(prep.std, dtype=torch.float32)


@dataclass(frozen=True)
class Geometry2D:
    """Where an original (H, W) image sits on the model grid: resized to ``inner`` and placed at ``offset``."""

    original: tuple[int, int]
    model: tuple[int, int]
    inner: tuple[int, int]
    offset: tuple[int, int]


def geometry_2d(original: Sequence[int], model: Sequence[int], resize: str) -> Geometry2D:
    """The placement of an ``original`` (H, W) image on the ``model`` (h, w) grid for ``resize`` mode."""
    H, W = (int(v) for v in original)
    h, w = (int(v) for v in model)
    if resize == "stretch":
        return Geometry2D((H, W), (h, w), (h, w), (0, 0))
    s = min(h / H, w / W)
    ih, iw = max(1, min(h, math.floor(H * s + 0.5))), max(1, min(w, math.floor(W * s + 0.5)))
    return Geometry2D((H, W), (h, w), (ih, iw), ((h - ih) // 2, (w - iw) // 2))


def to_model_2d(x: torch.Tensor, geo: Geometry2D, pad: torch.Tensor) -> torch.Tensor:
    """Normalised images (N, C, H, W) → model inputs (N, C, h, w) (antialiased bilinear resize, padding)."""
    if tuple(x.shape[-2:]) != geo.inner:
        down = geo.inner[0] < x.shape[-2] or geo.inner[1] < x.shape[-1]
        x = F.interpolate(x, size=geo.inner, mode="bilinear", align_corners=False, antialias=down)
    if geo.inner == geo.model:
        return x
    out = pad.to(x.device, x.dtype).view(1, -1, 1, 1).expand(x.shape[0], -1, *geo.model).clone()
    oy, ox = geo.offset
    out[..., oy : oy + geo.inner[0], ox : ox + geo.inner[1]] = x
    return out


def from_model_2d(logits: torch.Tensor, geo: Geometry2D) -> torch.Tensor:
    """Logits (..., K, h, w) on the model grid → (..., K, H, W) on the original grid (crop, bilinear resize).

    Leading dimensions (samples, batch) are kept."""
    oy, ox = geo.offset
    x = logits[..., oy : oy + geo.inner[0], ox : ox + geo.inner[1]]
    if tuple(x.shape[-2:]) == geo.original:
        return x
    lead = x.shape[:-2]
    y = F.interpolate(x.reshape(1, -1, *x.shape[-2:]).float(), size=geo.original, mode="bilinear", align_corners=False)
    return y.reshape(*lead, *geo.original)
