"""Training augmentation on batches of model-grid tensors (seeded, so CPU training is reproducible).

2D: random horizontal/vertical flips, rotation (uniform in ±``max_rotation`` degrees) and scaling (uniform in
``1 ± max_scale``) by one affine resampling (images bilinear, labels nearest, reflection at the borders), then
intensity jitter. 3D: random flips on every axis and intensity jitter. Intensity jitter works on the [0, 1] scale
(undoing the normalisation): photos get per-image brightness (± ``brightness``), contrast (× 1 ± ``contrast``)
and per-channel gain (× 1 ± ``colour``); CT gets a global scale and shift of the same sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Sizes of the random transforms; ``enabled=False`` returns batches unchanged."""

    enabled: bool = True
    flip: bool = True
    max_rotation: float = 20.0
    max_scale: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    colour: float = 0.05


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def augment_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    photo: bool,
    cfg: AugmentConfig,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment normalised images ``x`` (N, C, *S) and labels ``y`` (N, *S) (int64) with generator ``g`` (CPU).

    ``mean``/``std`` (C,) undo the normalisation for the intensity jitter. Returns new tensors of the same shapes.
    """
    if not cfg.enabled:
        return x, y
    n, dims = x.shape[0], x.dim() - 2
    dev = x.device
    if dims == 2:
        ang = _uniform(n, -cfg.max_rotation, cfg.max_rotation, g) * math.pi / 180
        scale = _uniform(n, 1 - cfg.max_scale, 1 + cfg.max_scale, g)
        fx = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
        fy = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos * fx, -sin * fy
        theta[:, 1, 0], theta[:, 1, 1] = sin * fx, cos * fy
        theta = theta.to(dev, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        yf = F.grid_sample(y[:, None].to(x.dtype), grid, mode="nearest", padding_mode="reflection", align_corners=False)
        y = yf[:, 0].round().long()
    elif cfg.flip:
        flips = torch.rand(n, dims, generator=g) < 0.5
        x, y = x.clone(), y.clone()
        for i in range(n):
            axes = [d for d in range(dims) if flips[i, d]]
            if axes:
                x[i] = x[i].flip([a + 1 for a in axes])
                y[i] = y[i].flip(axes)
    shape = (1, -1) + (1,) * dims
    m, s = mean.to(dev).view(shape), std.to(dev).view(shape)
    unit = x * s + m
    per = (n,) + (1,) * (dims + 1)
    b = _uniform(n, -cfg.brightness, cfg.brightness, g).view(per).to(dev)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(per).to(dev)
    if photo:
        gain = _uniform(n * x.shape[1], 1 - cfg.colour, 1 + cfg.colour, g).view(n, x.shape[1], *(1,) * dims).to(dev)
        centre = unit.mean(dim=tuple(range(1, dims + 2)), keepdim=True)
        unit = ((unit - centre) * c + centre + b) * gain
        unit = unit.clamp(0, 1)
    else:
        unit = unit * c + b
    return (unit - m) / s, y
