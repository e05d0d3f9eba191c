"""Running sums of stochastic predictions: memory that does not grow with the number of samples T.

A sampler hands the accumulator log-probabilities of ``n`` samples for one region of the case's grid,
``logp`` ``(n, K, *region)`` (from ``log_softmax``), together with the index of the first sample and the region.
The accumulator keeps, per voxel of the whole case:

- ``sum_p``       ``(K, *spatial)`` float32  Σ_t p_t
- ``sum_logp``    ``(K, *spatial)`` float32  Σ_t log p_t
- ``sum_entropy`` ``(*spatial)``    float32  Σ_t H[p_t] (nats)

- ``votes``       ``(K, *spatial)`` uint16   how many samples' argmax is class k (the agreement counts)

and, per sample, ``volumes`` ``(T, K)`` float64 (ml of each class in the argmax of sample t),
``soft_volumes`` ``(T, K)`` float64 (ml of Σ_voxels p_t) and, when the final segmentation S is given,
``overlap_volumes`` ``(T, K)`` float64 (ml of argmax_t = k and S = k), from which the agreement features
(:mod:`uqseg_cli.bayes.agreement`) are exact for any T. The running sums are float32 by default
(``sum_dtype``; float64 for exact references), the per-sample volumes float64.
Regions may arrive in any order and samples in any grouping; :meth:`SampleAccumulator.result` checks that every
voxel received every sample exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from uqseg_cli.bayes.measures import SampleSums, argmax_classes

Index = tuple[slice, ...]
SampleSink = Callable[[int, Index, torch.Tensor], None]
"""Called as ``sink(t0, region_index, probs)`` with ``probs`` ``(n, K, *region)`` float32 on the CPU."""


@dataclass(frozen=True)
class AccumulatedSums:
    """The finished sums of one case and method (numpy, on the CPU).

    Attributes:
        sum_p: ``(K, *spatial)`` float32.  sum_logp: ``(K, *spatial)`` float32.
        sum_entropy: ``(*spatial)`` float32.  volumes, soft_volumes: ``(T, K)`` float64, ml.  T: samples.
    """

    sum_p: np.ndarray
    sum_logp: np.ndarray
    sum_entropy: np.ndarray
    volumes: np.ndarray
    soft_volumes: np.ndarray
    T: int
    votes: np.ndarray | None = None
    overlap_volumes: np.ndarray | None = None

    def sums(self) -> SampleSums:
        """The view that :mod:`uqseg_cli.bayes.measures` computes from."""
        return SampleSums.from_numpy(self.sum_p, self.sum_logp, self.sum_entropy, self.T)


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml from its spacing in mm (``prod(spacing) / 1000``; for a 2D image, mm² / 1000)."""
    return float(math.prod(float(s) for s in spacing)) / 1000.0


class SampleAccumulator:
    """Per-voxel running sums over ``T`` samples of a ``K``-class prediction on a grid of ``spatial_shape``.

    Args:
        num_classes: K.
        spatial_shape: the case's grid, e.g. ``(H, W)`` or ``(D, H, W)``.
        T: the number of samples that will be added.
        spacing: voxel spacing in mm, one per spatial axis (for the volumes in ml).
        sum_dtype: dtype of the running sums (float32 as stored; float64 for exact references).
        sample_sink: optional callback receiving every sample's probabilities (``--keep-samples``).
        segmentation: optional ``(*spatial)`` integer labels of the final segmentation S; per-sample overlaps
            ``|argmax_t = k  and  S = k|`` are then counted.
    """

    def __init__(
        self,
        num_classes: int,
        spatial_shape: Sequence[int],
        T: int,
        spacing: Sequence[float],
        *,
        sum_dtype: torch.dtype = torch.float32,
        sample_sink: SampleSink | None = None,
        segmentation: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 1 <= T <= np.iinfo(np.uint16).max:
            raise ValueError(f"T must be in 1..65535, got {T}")
        self.K = int(num_classes)
        self.shape = tuple(int(s) for s in spatial_shape)
        if len(spacing) != len(self.shape):
            raise ValueError(f"spacing {tuple(spacing)} does not match the grid {self.shape}")
        self.T = int(T)
        self.voxel_ml = voxel_volume_ml(spacing)
        self.sum_p = torch.zeros((self.K, *self.shape), dtype=sum_dtype)
        self.sum_logp = torch.zeros((self.K, *self.shape), dtype=sum_dtype)
        self.sum_entropy = torch.zeros(self.shape, dtype=sum_dtype)
        self.counts = torch.zeros((self.T, self.K), dtype=torch.float64)  # argmax voxel counts per sample
        self.soft = torch.zeros((self.T, self.K), dtype=torch.float64)  # Σ p_t per sample, in voxels
        self._coverage = torch.zeros(self.shape, dtype=torch.int32)  # samples added per voxel
        self._sample_voxels = torch.zeros(self.T, dtype=torch.int64)  # voxels added per sample
        self.votes = torch.zeros((self.K, *self.shape), dtype=torch.int32)  # samples voting k, per voxel
        self.overlap = torch.zeros((self.T, self.K), dtype=torch.float64)  # |argmax_t = k and S = k| per sample
        self.segmentation = None
        if segmentation is not None:
            seg = torch.as_tensor(np.asarray(segmentation)).long()
            if tuple(seg.shape) != self.shape:
                raise ValueError(f"segmentation {tuple(seg.shape)} does not match the grid {self.shape}")
            self.segmentation = seg
        self.sample_sink = sample_sink

    def add(self, logp: torch.Tensor, t0: int, index: Index | None = None) -> None:
        """Add samples ``t0 .. t0+n-1`` for one region.

        Args:
            logp: ``(n, K, *region)`` log-probabilities (float32 or float64, any device).
            t0: index of the first of the n samples.
            index: tuple of slices selecting the region in the spatial grid (``None`` = the whole grid).
        """
        index = tuple(slice(None) for _ in self.shape) if index is None else tuple(index)
        if logp.ndim != 2 + len(self.shape) or logp.shape[1] != self.K:
            raise ValueError(f"logp must be (n, {self.K}, *region), got {tuple(logp.shape)}")
        n = int(logp.shape[0])
        if t0 < 0 or t0 + n > self.T:
            raise ValueError(f"samples {t0}..{t0 + n - 1} are outside 0..{self.T - 1}")
        region = self._coverage[index].shape
        if tuple(logp.shape[2:]) != tuple(region):
            raise ValueError(f"logp region {tuple(logp.shape[2:])} does not match index region {tuple(region)}")
        # float32 work for float32 sums (one add sums at most T samples), float64 for float64 sums
        work = torch.float64 if (self.sum_p.dtype == torch.float64 or logp.dtype == torch.float64) else torch.float32
        lp = logp.detach().to(work)
        p = torch.exp(lp)
        plogp = torch.nan_to_num_(p * lp, nan=0.0)  # 0 * log 0 = 0 where a probability is exactly 0
        dt = self.sum_p.dtype
        self.sum_p[(slice(None), *index)] += p.sum(0).to("cpu", dt)
        self.sum_logp[(slice(None), *index)] += lp.sum(0).to("cpu", dt)
        self.sum_entropy[index] += (-plogp.sum(1)).sum(0).to("cpu", dt)
        # per-sample class counts of the argmax, in one bincount
        am = argmax_classes(lp, 1).long()  # (n, *region)
        lab = am.reshape(n, -1) + (torch.arange(n, device=lp.device) * self.K)[:, None]
        cnt = torch.bincount(lab.reshape(-1), minlength=n * self.K).reshape(n, self.K)
        self.counts[t0 : t0 + n] += cnt.to("cpu", torch.float64)
        am = am.to("cpu")
        votes = self.votes[(slice(None), *index)]
        for k in range(self.K):
            votes[k] += (am == k).sum(0, dtype=torch.int32)
        if self.segmentation is not None:
            seg = self.segmentation[index]
            agree = (am == seg.unsqueeze(0)).reshape(n, -1)
            keys = (seg.reshape(1, -1) + (torch.arange(n) * self.K)[:, None])[agree]
            ov = torch.bincount(keys, minlength=n * self.K).reshape(n, self.K)
            self.overlap[t0 : t0 + n] += ov.to(torch.float64)
        self.soft[t0 : t0 + n] += p.reshape(n, self.K, -1).sum(2).to("cpu")
        self._coverage[index] += n
        self._sample_voxels[t0 : t0 + n] += int(np.prod(region))
        if self.sample_sink is not None:
            self.sample_sink(t0, index, p.to("cpu", torch.float32))

    def result(self) -> AccumulatedSums:
        """The finished sums; raises ``RuntimeError`` unless every voxel got every sample exactly once."""
        n_vox = int(np.prod(self.shape))
        if not (torch.all(self._coverage == self.T) and torch.all(self._sample_voxels == n_vox)):
            lo, hi = int(self._coverage.min()), int(self._coverage.max())
            raise RuntimeError(
                f"incomplete sampling: voxels received {lo}..{hi} of {self.T} samples "
                f"(per-sample voxel totals {self._sample_voxels.tolist()} of {n_vox})"
            )
        return AccumulatedSums(
            sum_p=self.sum_p.to(torch.float32).numpy(),
            sum_logp=self.sum_logp.to(torch.float32).numpy(),
            sum_entropy=self.sum_entropy.to(torch.float32).numpy(),
            volumes=(self.counts * self.voxel_ml).numpy(),
            soft_volumes=(self.soft * self.voxel_ml).numpy(),
            T=self.T,
            votes=self.votes.to(torch.uint16).numpy(),
            overlap_volumes=(self.overlap * self.voxel_ml).numpy() if self.segmentation is not None else None,
        )

    def sums(self) -> SampleSums:
        """The current running sums as :class:`SampleSums` (in ``sum_dtype``), without the completeness check."""
        return SampleSums(self.sum_p, self.sum_logp, self.sum_entropy, self.T)
