"""MC dropout with reproducible masks and encoder caching.

Only dropout is stochastic: the model stays in eval mode (batch norm uses its running statistics) and every
dropout module with ``p > 0`` gets a forward hook that applies a mask drawn from its own generator, seeded by
``(case base seed, sample t, item key, module name, call number)``. Hence:

- the mask of sample t for one slice/tile does not depend on how samples or slices are batched, so encoder
  caching (``encode`` once, ``decode`` on ``repeat_features(features, n)``) and full passes give the same samples,
  and resumed, sharded or re-batched runs write identical numbers;
- the base seed is the first draw of ``uqseg_cli.rng.case_generator(seed, case_id, "mcdropout")``.

Supported: ``nn.Dropout`` (element-wise masks) and ``nn.Dropout1d/2d/3d`` (channel-wise masks), scaled by
``1/(1-p)`` as in training. Other dropout kinds (alpha dropout) are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.common import (
    ChunkLike,
    Restore,
    autocast,
    base_seed,
    derive_seed,
    item_keys,
    samples_per_pass,
    split_samples,
)

_ELEMENTWISE = (nn.Dropout,)
_CHANNELWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def find_dropout(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every dropout module with ``p > 0``; raises ``ValueError`` on unsupported kinds."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            if not isinstance(m, _ELEMENTWISE + _CHANNELWISE):
                raise ValueError(f"MC dropout: unsupported dropout module {name} ({type(m).__name__})")
            found.append((name, m))
    return found


class SeededDropout:
    """Context manager: while active, the model's dropout modules apply seeded masks (model in eval mode).

    Call :meth:`set_batch` before each forward pass with one ``(sample t, item key)`` per batch row.
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.seed = int(seed)
        self.modules = find_dropout(model)
        self.items: list[tuple[int, tuple]] | None = None
        self.calls: dict[str, int] = {}
        self.fired = 0  # dropout calls since the last set_batch
        self._handles: list = []

    def __enter__(self) -> SeededDropout:
        for name, m in self.modules:
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def set_batch(self, items: Sequence[tuple[int, tuple]] | None) -> None:
        """Rows of the next forward pass: ``items[j] = (t, key)``; ``None`` = dropout must not run."""
        self.items = None if items is None else list(items)
        self.calls = {}
        self.fired = 0

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            self.fired += 1
            if self.items is None:
                raise RuntimeError(
                    f"MC dropout: dropout module {name!r} ran inside encode(), but the model declares "
                    "dropout_after_encoder; run with full passes"
                )
            x = inputs[0]
            if x.shape[0] != len(self.items):
                raise RuntimeError(f"MC dropout: batch of {x.shape[0]} rows but {len(self.items)} samples set")
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            p = float(module.p)
            if isinstance(module, _CHANNELWISE):
                shape = (x.shape[1],) + (1,) * (x.ndim - 2)
            else:
                shape = tuple(x.shape[1:])
            masks = []
            for t, key in self.items:
                g = torch.Generator(device=x.device)
                g.manual_seed(derive_seed(self.seed, t, key, name, call))
                masks.append(torch.rand(shape, generator=g, device=x.device) >= p)
            mask = torch.stack(masks).to(x.dtype)
            return x * mask * (1.0 / (1.0 - p))

        return hook


@dataclass(frozen=True)
class MCDropoutInfo:
    """How the samples were drawn: ``mode`` is ``"cached"`` (encoder once) or ``"full"`` (whole passes)."""

    mode: str
    dropout_modules: int


def can_cache_encoder(model: nn.Module) -> bool:
    """True when the model has the encode/decode split and all its dropout sits after the encoder."""
    return all(hasattr(model, a) for a in ("encode", "decode", "repeat_features")) and bool(
        getattr(model, "dropout_after_encoder", False)
    )


@torch.no_grad()
def sample_mc_dropout(
    model: nn.Module,
    chunks: Iterable[ChunkLike],
    restore: Restore,
    acc: SampleAccumulator,
    *,
    generator: torch.Generator,
    max_batch: int | None = None,
    cache_encoder: bool | None = None,
    amp: bool = False,
) -> MCDropoutInfo:
    """Draw ``acc.T`` MC dropout samples of one case into ``acc``.

    Args:
        model: a segmentation network (``SegModel``: ``encode``/``decode``/``repeat_features``), put in eval mode.
        chunks: the case's chunks (``Predictor.chunks(image)``), partitioning its grid.
        restore: logits ``(n, N, K, *model_spatial)`` → log-probabilities ``(n, K, *region)``.
        acc: receives the samples.
        generator: the case's generator for method ``mcdropout``; one draw seeds everything.
        max_batch: most rows per forward pass (``n`` samples of a chunk of N items make ``n * N`` rows);
            default: all T samples of a chunk in one pass.
        cache_encoder: ``None`` = whenever the model allows it (:func:`can_cache_encoder`); ``False`` forces full
            passes; ``True`` requires caching.
        amp: float16 autocast on CUDA.
    """
    T = acc.T
    dropout = find_dropout(model)
    cacheable = can_cache_encoder(model)
    if cache_encoder is None:
        cache_encoder = cacheable
    elif cache_encoder and not cacheable:
        raise ValueError("MC dropout: this model cannot cache its encoder (dropout inside the encoder)")
    seed = base_seed(generator)
    model.eval()
    with SeededDropout(model, seed) as sd:
        for chunk in chunks:
            x = chunk.x
            N = int(x.shape[0])
            keys = item_keys(chunk.index, tuple(x.shape))
            n_per = samples_per_pass(T, N, max_batch)
            feats = None
            if cache_encoder:
                sd.set_batch(None)  # dropout firing inside encode() raises
                with autocast(x.device, amp):
                    feats = model.encode(x)
            for t0 in range(0, T, n_per):
                n = min(n_per, T - t0)
                sd.set_batch([(t0 + j // N, keys[j % N]) for j in range(n * N)])
                with autocast(x.device, amp):
                    if cache_encoder:
                        logits = model.decode(model.repeat_features(feats, n))
                    else:
                        logits = model(x.repeat(n, *([1] * (x.ndim - 1))))
                acc.add(restore(split_samples(logits, n), chunk), t0, chunk.index)
    return MCDropoutInfo("cached" if cache_encoder else "full", len(dropout))
