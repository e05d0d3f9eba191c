"""Deep ensemble: one sample per member checkpoint, each model loaded once and reused for every case.

:func:`sample_ensemble` feeds every member the same chunks (members that share their preprocessing: one
preprocessing pass per chunk). :func:`sample_ensemble_own_inputs` lets each member preprocess the image itself —
for checkpoints trained separately, whose normalisation statistics differ (each run measures them on its own
training split); the grid and channels must still agree (the CLI checks this).
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


@torch.no_grad()
def sample_ensemble_own_inputs(
    predictors: Sequence, image, case_id: str, acc: SampleAccumulator, *, amp: bool = False
) -> None:
    """Sample ``t`` is ``predictors[t]`` (an :class:`~uqseg_cli.models.inference.Predictor`) on its own preprocessing of
    ``image`` ``(C, *spatial)``; ``acc.T`` must equal ``len(predictors)``."""
    if acc.T != len(predictors):
        raise ValueError(f"ensemble: the accumulator expects {acc.T} samples but there are {len(predictors)} members")
    for t, pred in enumerate(predictors):
        pred.model.eval()
        for chunk in pred.chunks(image, case_id):
            with autocast(chunk.x.device, amp):
                logits = pred.model(chunk.x)
            acc.add(pred.restore(split_samples(logits, 1), chunk), t, chunk.index)
