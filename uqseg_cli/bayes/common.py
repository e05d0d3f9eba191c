"""What the three samplers share: the chunk protocol, mixed precision, and per-item keys for seeding.

A sampler walks the chunks of one case (``Predictor.chunks(image)`` in ``uqseg_cli/inference.py``): each chunk has
``index`` (tuple of slices into the case's spatial grid; the chunks partition it) and ``x`` (the preprocessed
model input ``(N, C, *model_spatial)`` on the device). It runs the model on ``x`` however it needs, hands the
logits ``(n, N, K, *model_spatial)`` of ``n`` samples to ``restore(logits, chunk)``, which returns log-probabilities
``(n, K, *region)`` on the original grid, and adds those to a :class:`~uqseg_cli.bayes.accumulator.SampleAccumulator`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Hashable
from typing import Protocol

import torch


class ChunkLike(Protocol):
    index: tuple[slice, ...]
    x: torch.Tensor


Restore = Callable[[torch.Tensor, ChunkLike], torch.Tensor]


def autocast(device: torch.device | str, enabled: bool):
    """Mixed precision (float16 autocast) on CUDA when ``enabled``; a no-op context on the CPU."""
    dev = torch.device(device)
    if enabled and dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def item_keys(index: tuple[slice, ...], x_shape: tuple[int, ...]) -> list[tuple]:
    """A key per batch item of a chunk that names its place in the case's grid, independent of the batch size.

    ``x_shape`` is the model input ``(N, C, *model_spatial)``. When the region has one axis more than the model
    input (a stack of 2D slices of a volume), item ``i`` is slice ``start_0 + i`` of the region's first axis;
    otherwise (a whole 2D image, a 3D tile) the items are named by the region's bounds and their batch position.
    """
    n_items, model_dims = int(x_shape[0]), len(x_shape) - 2
    bounds = tuple((0 if s.start is None else int(s.start), None if s.stop is None else int(s.stop)) for s in index)
    if len(index) == model_dims + 1:
        first = bounds[0][0]
        return [("slice", first + i, bounds[1:]) for i in range(n_items)]
    return [("region", bounds, i) for i in range(n_items)]


def derive_seed(*parts: Hashable) -> int:
    """A 63-bit seed from a base seed and a path of keys (BLAKE2b; stable across runs and machines)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def base_seed(generator: torch.Generator) -> int:
    """One draw from the per-case generator, from which every further seed of the case is derived."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def split_samples(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Logits ``(n*N, K, *s)`` of a sample-major batch → ``(n, N, K, *s)`` in float32."""
    return logits.float().reshape(n, logits.shape[0] // n, *logits.shape[1:])


def samples_per_pass(T: int, n_items: int, max_batch: int | None) -> int:
    """How many samples of a chunk with ``n_items`` rows go in one forward pass: all ``T`` when ``max_batch`` is
    None, else as many as fit ``n * n_items <= max_batch`` (at least one)."""
    if max_batch is None:
        return T
    return max(1, min(T, int(max_batch) // max(1, n_items)))
