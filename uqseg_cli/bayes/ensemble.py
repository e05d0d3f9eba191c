"""Deep ensemble: one sample per member checkpoint, each model loaded once and reused for every case.

The members must share the preprocessing of the chunks (same input channels, normalisation and input grid):
the CLI checks this from the checkpoints before sampling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.common import ChunkLike, Restore, autocast, split_samples


@torch.no_grad()
def sample_ensemble(
    models: Sequence[nn.Module],
    chunks: Iterable[ChunkLike],
    restore: Restore,
    acc: SampleAccumulator,
    *,
    amp: bool = False,
) -> None:
    """Sample ``t`` of ``acc`` is the prediction of ``models[t]``; ``acc.T`` must equal ``len(models)``.

    Deterministic: every member runs in eval mode (dropout off, batch norm with running statistics).
    """
    if acc.T != len(models):
        raise ValueError(f"ensemble: the accumulator expects {acc.T} samples but there are {len(models)} members")
    for m in models:
        m.eval()
    for chunk in chunks:
        x = chunk.x
        for t, model in enumerate(models):
            with autocast(x.device, amp):
                logits = model(x)
            acc.add(restore(split_samples(logits, 1), chunk), t, chunk.index)
