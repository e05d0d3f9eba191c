"""Test-time augmentation with invertible transforms.

2D models (input ``(N, C, H, W)``, photos or the slices of a volume): the 8 elements of the dihedral group —
flips and 90° rotations of the last two axes. 3D models (``(N, C, D, H, W)``): the 8 combinations of flips of the
three spatial axes. Sample ``t`` uses transform ``t mod 8`` in the fixed order of :func:`transforms_for`
(identity first), so ``T = 1..8`` picks the first T; more than 8 samples need intensity jitter.

Each prediction is mapped back with the inverse transform (on the logits, on the model's grid) before
``restore`` and accumulation. Optional intensity jitter (``intensity = s > 0``): sample t sees
``a_t x + b_t`` with ``a_t ~ U(1-s, 1+s)`` and ``b_t ~ U(-s, s)`` on the preprocessed (normalised) input; the
``(a_t, b_t)`` are drawn once per case from the generator of method ``tta``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.common import ChunkLike, Restore, autocast, samples_per_pass, split_samples


@dataclass(frozen=True)
class Transform:
    """Flip ``flips`` (negative axes), then rotate ``rot`` quarter turns in the plane of the last two axes."""

    name: str
    flips: tuple[int, ...] = ()
    rot: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.flip(x, self.flips) if self.flips else x
        return torch.rot90(y, self.rot, dims=(-2, -1)) if self.rot % 4 else y

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``apply(x)`` for ``x`` of ``shape`` (odd quarter turns swap the last two axes)."""
        shape = tuple(shape)
        return shape[:-2] + (shape[-1], shape[-2]) if self.rot % 2 else shape

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(y, -self.rot, dims=(-2, -1)) if self.rot % 4 else y
        return torch.flip(x, self.flips) if self.flips else x


TRANSFORMS_2D: tuple[Transform, ...] = (
    Transform("identity"),
    Transform("flip-w", (-1,)),
    Transform("flip-h", (-2,)),
    Transform("rot180", (), 2),
    Transform("transpose", (-1,), 1),
    Transform("rot90", (), 1),
    Transform("rot270", (), 3),
    Transform("anti-transpose", (-1,), 3),
)

TRANSFORMS_3D: tuple[Transform, ...] = (
    Transform("identity"),
    Transform("flip-w", (-1,)),
    Transform("flip-h", (-2,)),
    Transform("flip-d", (-3,)),
    Transform("flip-hw", (-2, -1)),
    Transform("flip-dw", (-3, -1)),
    Transform("flip-dh", (-3, -2)),
    Transform("flip-dhw", (-3, -2, -1)),
)


def transforms_for(dims: int) -> tuple[Transform, ...]:
    """The 8 invertible transforms for a ``dims``-dimensional model input (2 or 3)."""
    if dims == 2:
        return TRANSFORMS_2D
    if dims == 3:
        return TRANSFORMS_3D
    raise ValueError(f"TTA: expected a 2D or 3D model input, got {dims} spatial dims")


def max_samples(intensity: float) -> int | None:
    """Largest T without repeating a (transform, jitter) pair: 8 without jitter, unbounded with it."""
    return None if intensity > 0 else 8


def draw_intensity(T: int, intensity: float, generator: torch.Generator) -> torch.Tensor:
    """``(T, 2)`` float64 rows ``(a_t, b_t)``: scale and shift per sample (``(1, 0)`` rows when ``intensity == 0``)."""
    if intensity < 0:
        raise ValueError(f"TTA intensity must be >= 0, got {intensity}")
    ab = torch.zeros((T, 2), dtype=torch.float64)
    ab[:, 0] = 1.0
    if intensity > 0:
        u = torch.rand((T, 2), generator=generator, dtype=torch.float64) * 2.0 - 1.0
        ab += intensity * u
    return ab


@torch.no_grad()
def sample_tta(
    model: nn.Module,
    chunks: Iterable[ChunkLike],
    restore: Restore,
    acc: SampleAccumulator,
    *,
    generator: torch.Generator,
    intensity: float = 0.0,
    max_batch: int | None = None,
    amp: bool = False,
) -> list[str]:
    """Draw ``acc.T`` TTA samples of one case into ``acc``; returns the transform name of each sample.

    Args:
        model: the segmentation network (eval mode, deterministic).
        chunks, restore, acc: as for every sampler (see ``uqseg_cli.bayes.common``).
        generator: the case's generator for method ``tta`` (only drawn from when ``intensity > 0``).
        intensity: jitter strength ``s`` (0 = geometric transforms only; then T <= 8).
        max_batch: most rows per forward pass (``n`` transformed copies of N items make ``n * N`` rows;
            default all T at once); copies whose transformed shape differs (90° rotations of non-square inputs)
            go in separate passes.
        amp: float16 autocast on CUDA.
    """
    T = acc.T
    limit = max_samples(intensity)
    if limit is not None and T > limit:
        raise ValueError(f"TTA: only {limit} distinct transforms; use T <= {limit} or intensity jitter")
    ab = draw_intensity(T, intensity, generator)
    model.eval()
    names: list[str] = []
    for chunk in chunks:
        x = chunk.x
        tf = transforms_for(x.ndim - 2)
        n_per = samples_per_pass(T, int(x.shape[0]), max_batch)
        names = [tf[t % len(tf)].name for t in range(T)]
        t = 0
        while t < T:
            group = [t]
            shape = tf[t % len(tf)].out_shape(tuple(x.shape))
            while (
                len(group) < n_per
                and group[-1] + 1 < T
                and tf[(group[-1] + 1) % len(tf)].out_shape(tuple(x.shape)) == shape
            ):
                group.append(group[-1] + 1)
            batch = []
            for s in group:
                a, b = (float(v) for v in ab[s])
                xs = tf[s % len(tf)].apply(x)
                batch.append(xs if (a == 1.0 and b == 0.0) else xs * a + b)
            with autocast(x.device, amp):
                logits = model(torch.cat(batch, 0))
            logits = split_samples(logits, len(group))
            logits = torch.stack([tf[s % len(tf)].invert(logits[i]) for i, s in enumerate(group)])
            acc.add(restore(logits, chunk), group[0], chunk.index)
            t = group[-1] + 1
    return names
