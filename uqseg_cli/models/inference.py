"""Deterministic inference and the chunking every sampler shares (docs/architecture.md, "Models").

`Predictor.chunks(image)` cuts a case into model inputs whose ``index`` regions partition the original grid
without overlap: a 2D image is one chunk; a volume under a 2D model is a run of at most ``batch_size`` axial
slices; a volume under the 3D model is a tile of ``input_size`` voxels whose central region (without ``halo``
voxels of context per side) is the chunk's region. `Predictor.restore` maps logits back to log-probabilities on
the original grid, keeping any leading sample dimensions, so MC dropout, TTA and ensembles work the same for all.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import InputError
from uqseg_cli.models.base import SegModel
from uqseg_cli.models.checkpoint import Checkpoint, load_checkpoint
from uqseg_cli.models.preprocessing import (
    Geometry2D,
    adapt_channels,
    from_model_2d,
    geometry_2d,
    normalise,
    pad_values,
    to_model_2d,
)


@dataclass
class Chunk:
    """One model input. ``index``: slices into the original spatial grid (the region this chunk predicts);
    ``x``: preprocessed input (N, C, *model_spatial) on the device. The rest tells `restore` how to map back."""

    index: tuple[slice, ...]
    x: torch.Tensor
    kind: str  # "image" (2D image, N=1), "slices" (N axial slices), "tile" (3D tile, N=1)
    geometry: Geometry2D | None = None
    crop: tuple[slice, ...] = ()


@dataclass(frozen=True)
class _Axis:
    """One axis of the 3D tiling: core region [start, stop) read from input [in_start, in_start + in_size)."""

    start: int
    stop: int
    in_start: int
    in_size: int


def tile_axis(length: int, tile: int, halo: int, multiple: int) -> list[_Axis]:
    """Tiles along one axis of ``length`` voxels. If the axis fits in ``tile``, one tile covers it (input size
    rounded up to ``multiple``); otherwise cores of ``tile - 2 * halo`` voxels, each read with ``halo`` of
    context per side (out-of-volume context is padding)."""
    if length <= tile:
        return [_Axis(0, length, 0, max(multiple, -(-length // multiple) * multiple))]
    core = tile - 2 * halo
    if core < 1:
        raise ValueError(f"tile {tile} leaves no core with halo {halo}")
    return [_Axis(s, min(s + core, length), s - halo, tile) for s in range(0, length, core)]


def _read_padded(vol: torch.Tensor, axes: tuple[_Axis, ...], pad: torch.Tensor) -> torch.Tensor:
    """Read the input box of ``axes`` from ``vol`` (C, D, H, W), padding outside with per-channel ``pad``."""
    C = vol.shape[0]
    out = pad.view(C, 1, 1, 1).expand(C, *(a.in_size for a in axes)).clone()
    src, dst = [], []
    for a, n in zip(axes, vol.shape[1:], strict=True):
        lo, hi = max(0, a.in_start), min(n, a.in_start + a.in_size)
        src.append(slice(lo, hi))
        dst.append(slice(lo - a.in_start, hi - a.in_start))
    out[(slice(None), *dst)] = vol[(slice(None), *src)]
    return out


class Predictor:
    """Preprocessing, chunking and mapping back for one model.

    ``model`` is put in eval mode; ``ckpt`` supplies the preprocessing. ``batch_size`` is the number of axial
    slices per chunk for volumes under 2D models. ``amp`` runs the forward pass in float16 autocast on CUDA.
    """

    def __init__(
        self,
        model: SegModel,
        ckpt: Checkpoint,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        amp: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.ckpt = ckpt
        self.prep = ckpt.preprocessing
        self.batch_size = max(1, int(batch_size))
        self.amp = bool(amp) and self.device.type == "cuda"
        self.num_classes = ckpt.num_classes
        self._pad = pad_values(self.prep)

    @classmethod
    def from_checkpoint(
        cls, path: Path | str, device: str | torch.device = "cpu", batch_size: int = 8, amp: bool = False
    ) -> Predictor:
        model, meta = load_checkpoint(path, map_location=device)
        return cls(model, meta, device, batch_size, amp)

    # -- chunking ------------------------------------------------------------------------------------------
    def chunks(self, image: np.ndarray, case_id: str = "") -> Iterator[Chunk]:
        """Model inputs for ``image`` (C, H, W) or (C, D, H, W) in source intensities."""
        where = f"case {case_id}" if case_id else "image"
        if image.ndim not in (3, 4):
            raise InputError(f"{where}: expected (C, H, W) or (C, D, H, W), got shape {tuple(image.shape)}")
        image = adapt_channels(image, self.prep.channels, where)
        if self.model.dims == 3:
            if image.ndim != 4:
                raise InputError(f"{where}: model {self.model.arch} is 3D and needs a volume, got a 2D image")
            yield from self._tiles(image)
        elif image.ndim == 3:
            geo = geometry_2d(image.shape[1:], self.prep.input_size, self.prep.resize)
            x = normalise(image, self.prep).unsqueeze(0)
            yield Chunk((slice(0, image.shape[1]), slice(0, image.shape[2])), self._to_model(x, geo), "image", geo)
        else:
            D, H, W = image.shape[1:]
            geo = geometry_2d((H, W), self.prep.input_size, self.prep.resize)
            for z0 in range(0, D, self.batch_size):
                z1 = min(D, z0 + self.batch_size)
                x = normalise(image[:, z0:z1], self.prep).transpose(0, 1)  # (n, C, H, W)
                yield Chunk((slice(z0, z1), slice(0, H), slice(0, W)), self._to_model(x, geo), "slices", geo)

    def _to_model(self, x: torch.Tensor, geo: Geometry2D) -> torch.Tensor:
        return to_model_2d(x.to(self.device), geo, self._pad).contiguous()

    def _tiles(self, image: np.ndarray) -> Iterator[Chunk]:
        vol = normalise(image, self.prep)
        m = self.model.size_multiple
        tile = [max(m, -(-int(t) // m) * m) for t in self.prep.input_size]
        per_axis = [tile_axis(n, t, self.prep.halo, m) for n, t in zip(vol.shape[1:], tile, strict=True)]
        for axes in itertools.product(*per_axis):
            x = _read_padded(vol, axes, self._pad).unsqueeze(0).to(self.device)
            index = tuple(slice(a.start, a.stop) for a in axes)
            crop = tuple(slice(a.start - a.in_start, a.stop - a.in_start) for a in axes)
            yield Chunk(index, x, "tile", None, crop)

    # -- mapping back --------------------------------------------------------------------------------------
    def restore(self, logits: torch.Tensor, chunk: Chunk) -> torch.Tensor:
        """Logits (..., N, K, *model_spatial) → float32 log-probabilities (..., K, *region) on the original grid.

        Logits are resampled (bilinear) to the original grid first, then ``log_softmax`` over K."""
        if logits.dim() < 2 + self.model.dims:
            raise ValueError(f"logits need (..., N, K, *spatial), got shape {tuple(logits.shape)}")
        if chunk.kind == "tile":
            out = logits[(..., *chunk.crop)].squeeze(-5)
        else:
            out = from_model_2d(logits, chunk.geometry)  # (..., N, K, H, W)
            out = out.squeeze(-4) if chunk.kind == "image" else out.movedim(-4, -3)  # slices: (..., K, n, H, W)
        return F.log_softmax(out.float(), dim=-1 - len(chunk.index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for a chunk input, under autocast when ``amp``."""
        ctx = torch.autocast(self.device.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with ctx:
            return self.model(x)

    @torch.no_grad()
    def predict_proba(self, image: np.ndarray, case_id: str = "") -> torch.Tensor:
        """Deterministic softmax probabilities (K, *spatial) float32 on the CPU, on the original grid."""
        self.model.eval()
        out = torch.empty((self.num_classes, *image.shape[1:]), dtype=torch.float32)
        for chunk in self.chunks(image, case_id):
            out[(slice(None), *chunk.index)] = self.restore(self.forward(chunk.x), chunk).exp().cpu()
        return out
