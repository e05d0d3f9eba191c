"""Extra training pairs for the regression CNNs: the sampled segmentations' vote levels (``score --vote-level-pairs``).

A regression CNN learns from one number per labelled case. Every case also has T sampled segmentations (`sample`
streams how many of them call each voxel each class: ``<method>/votes``), and each consensus level of them is a
plausible segmentation of the same image whose true Dice is known from the reference. The level-``k``
segmentation, ``k = 1..T``, calls a voxel foreground where at least ``k`` of the T samples do (``k = 1``: their
union, ``k = T``: their intersection), with the foreground class most samples chose there (ties: the lower class).
The distinct levels that differ from the scored segmentation are the case's extra pairs: the input with its
``seg:<c>`` channels replaced by the level's, and the level's own Dice (or IoU) as the target. The uncertainty
and agreement channels stay those of the case: they describe the same samples.

On ISIC 2017 (600 fitted cases, tta, T = 8) a case has 7.9 distinct levels on average, whose Dice differs from
the scored segmentation's by −0.065 to +0.058 for the middle 80 % (sd 0.066): the pairs teach how the Dice moves
when the segmentation moves against the same image and uncertainty, which one target per case cannot. They join the
training part only (never validation or out-of-fold prediction), one level per case and epoch drawn at random
(:func:`~uqseg_cli.quality.training.fit_cnn`), so an epoch costs twice a plain one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from uqseg_cli.errors import CaseError
from uqseg_cli.metrics.overlap import overlap_per_class
from uqseg_cli.quality.inputs import resample, seg_channels
from uqseg_cli.quality.meta import QualityMeta


def vote_levels(votes: np.ndarray) -> list[np.ndarray]:
    """The level segmentations of vote counts ``(K, *spatial)`` (per voxel they sum to T): ``T`` label maps
    ``(*spatial)`` uint8, level ``k = 1..T`` first to last (see the module text)."""
    votes = np.asarray(votes)
    t = int(votes.sum(axis=0).max()) if votes.size else 0
    fg = t - votes[0].astype(np.int64)
    cls = (np.argmax(votes[1:], axis=0) + 1).astype(np.uint8)
    return [np.where(fg >= k, cls, np.uint8(0)).astype(np.uint8) for k in range(1, t + 1)]


def distinct_levels(votes: np.ndarray, segmentation: np.ndarray) -> list[np.ndarray]:
    """:func:`vote_levels` without repeats and without the scored ``segmentation`` itself, in level order."""
    seg = np.asarray(segmentation)
    out: list[np.ndarray] = []
    for lv in vote_levels(votes):
        if lv.shape != seg.shape:
            raise ValueError(f"votes {lv.shape} and segmentation {seg.shape} differ in shape")
        if not np.array_equal(lv, seg) and not any(np.array_equal(lv, o) for o in out):
            out.append(lv)
    return out


@dataclass(frozen=True)
class LevelPairs:
    """Extra training pairs of a batch: ``seg`` ``(M, S, *input_size)`` float32 the raw resampled ``seg:<c>``
    channels (not standardised), ``target`` ``(M,)`` float64 their Dice (or IoU), ``case`` ``(M,)`` int64 the row of
    each pair's case in the inputs they go with."""

    seg: torch.Tensor
    target: np.ndarray
    case: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def subset(self, rows: np.ndarray) -> LevelPairs:
        """The pairs of the cases ``rows`` (indices into the current case rows), their ``case`` renumbered to
        positions in ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.full(int(max(self.case.max(initial=-1), rows.max(initial=-1))) + 1, -1, dtype=np.int64)
        pos[rows] = np.arange(len(rows))
        keep = np.flatnonzero(pos[self.case] >= 0) if len(self) else np.zeros(0, dtype=np.int64)
        return LevelPairs(self.seg[keep], self.target[keep], pos[self.case[keep]])


def case_level_pairs(view, meta: QualityMeta, target: str) -> tuple[torch.Tensor, np.ndarray]:
    """One labelled case's pairs: ``(seg (m, S, *input_size), target (m,))``. Raises :class:`CaseError` naming the
    case when it has no vote counts of ``meta.method`` or no reference."""
    where = f"{view.file.path}: case {view.id}"
    if not view.has(f"{meta.method}/votes"):
        raise CaseError(f"{where}: no {meta.method}/votes for --vote-level-pairs (sample the method again with "
                        "`uqseg sample`, which stores vote counts)")
    if not view.has("reference"):
        raise CaseError(f"{where}: no reference for --vote-level-pairs")
    k = int(meta.num_classes)
    seg, ref = np.asarray(view.get("segmentation")), np.asarray(view.get("reference"))
    try:
        levels = distinct_levels(view.get(f"{meta.method}/votes"), seg)
    except ValueError as exc:
        raise CaseError(f"{where}: {meta.method}/votes: {exc}") from None
    classes = [int(meta.channels[i].partition(":")[2]) for i in seg_channels(meta)]
    size = tuple(int(s) for s in meta.input_size)
    if not levels:
        return torch.zeros((0, len(classes), *size)), np.zeros(0)
    chans = torch.from_numpy(np.stack([np.stack([(lv == c) for c in classes]) for lv in levels]).astype(np.float32))
    which = 0 if target == "dice" else 1
    y = np.array([overlap_per_class(lv, ref, k)[which].mean() for lv in levels], dtype=np.float64)
    return resample(chans, size), y


def read_level_pairs(sf, case_ids: Sequence[str], rows: Sequence[int], meta: QualityMeta, target: str,
                     progress=None) -> LevelPairs:
    """The pairs of the labelled cases ``case_ids`` (their input rows ``rows``)."""
    segs, ys, cases = [], [], []
    for cid, row in zip(case_ids, rows, strict=True):
        s, y = case_level_pairs(sf.case(cid), meta, target)
        segs.append(s)
        ys.append(y)
        cases.append(np.full(len(y), int(row), dtype=np.int64))
        if progress is not None:
            progress.advance(cid)
    size = tuple(int(s) for s in meta.input_size)
    seg = torch.cat(segs) if segs else torch.zeros((0, len(seg_channels(meta)), *size))
    return LevelPairs(seg, np.concatenate(ys) if ys else np.zeros(0),
                      np.concatenate(cases) if cases else np.zeros(0, dtype=np.int64))
