"""Voxel-wise uncertainty measures (DESIGN §4), exact for any number of samples.

Notation: ``T`` stochastic softmax predictions ``p_t`` over ``K`` classes per voxel, ``p̄ = mean_t p_t``,
natural logarithm (all measures are in nats).

Every measure follows from three running sums per voxel, held in :class:`SampleSums`:

- ``sum_p``        ``(K, *spatial)``  ``Σ_t p_t``
- ``sum_logp``     ``(K, *spatial)``  ``Σ_t log p_t`` (from ``log_softmax``; never ``log(p + eps)``)
- ``sum_entropy``  ``(*spatial)``     ``Σ_t H[p_t]``

so a sampler never holds the ``T`` predictions in memory. Every measure function accepts either a
:class:`SampleSums` or a raw sample tensor ``(T, K, *spatial)`` of probabilities (or of log-probabilities with
``log=True``); torch input gives torch output, numpy input gives numpy output. Results are computed in float64
by default.

======================  ================================================  ===============================
measure                 formula                                           note
======================  ================================================  ===============================
``confidence``          ``max_k p̄_k``                                      uncertainty = ``1 - confidence``
``entropy``             ``H[p̄] = -Σ_k p̄_k log p̄_k``                        total (predictive)
``expected_entropy``    ``E_t H[p_t]``                                    aleatoric part
``mutual_information``  ``H[p̄] - E_t H[p_t]``, clamped at 0 per voxel      epistemic part
``epkl``                ``-Σ_k p̄_k E_t[log p_tk] - E_t H[p_t]``            mean KL over the T² ordered pairs
======================  ================================================  ===============================

EPKL over the ``T(T-1)`` distinct ordered pairs only is ``T/(T-1)`` times the all-pairs value
(``pairs="distinct"``). Conventions: ``0 log 0 = 0``; a class with ``p̄_k = 0`` contributes nothing; a class
with ``p̄_k > 0`` but ``p_tk = 0`` in some sample makes EPKL ``+inf`` (that KL divergence is infinite).
EPKL ≥ mutual information ≥ 0 holds exactly in the returned values (Jensen's inequality, enforced per class
against rounding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

MEASURES: tuple[str, ...] = ("confidence", "entropy", "expected_entropy", "mutual_information", "epkl")
EPKL_PAIRS: tuple[str, ...] = ("all", "distinct")
Pairs = Literal["all", "distinct"]


@dataclass(frozen=True)
class SampleSums:
    """Running sums over ``T`` probability samples (class axis first, no sample axis).

    Attributes:
        sum_p: ``(K, *spatial)`` Σ_t p_t.
        sum_logp: ``(K, *spatial)`` Σ_t log p_t (may hold ``-inf`` where some p_t is exactly 0).
        sum_entropy: ``(*spatial)`` Σ_t H[p_t] in nats.
        T: number of samples summed (≥ 1).
    """

    sum_p: torch.Tensor
    sum_logp: torch.Tensor
    sum_entropy: torch.Tensor
    T: int

    def __post_init__(self) -> None:
        if int(self.T) < 1:
            raise ValueError(f"SampleSums: T must be >= 1, got {self.T}")
        if self.sum_p.shape != self.sum_logp.shape:
            raise ValueError(f"SampleSums: sum_p {tuple(self.sum_p.shape)} != sum_logp {tuple(self.sum_logp.shape)}")
        if self.sum_p.ndim < 1 or self.sum_p.shape[1:] != self.sum_entropy.shape:
            raise ValueError(
                f"SampleSums: sum_entropy {tuple(self.sum_entropy.shape)} must be sum_p {tuple(self.sum_p.shape)} "
                "without its class axis"
            )

    @property
    def num_classes(self) -> int:
        return int(self.sum_p.shape[0])

    @classmethod
    def from_samples(cls, samples: torch.Tensor | np.ndarray, *, log: bool = False) -> SampleSums:
        """Sums of a raw sample tensor ``(T, K, *spatial)`` of probabilities (or log-probabilities if ``log``).

        Probabilities are logged exactly (``log 0 = -inf``); pass log-probabilities from ``log_softmax`` where
        you have them. Sums are taken in float64.
        """
        x = _as_tensor(samples).to(torch.float64)
        if x.ndim < 2:
            raise ValueError(f"samples must be (T, K, *spatial), got shape {tuple(x.shape)}")
        if log:
            logp = x
            p = torch.exp(logp)
        else:
            p = x
            logp = torch.log(p)
        return cls(p.sum(0), logp.sum(0), entropy_of(p, logp, dim=1).sum(0), int(x.shape[0]))

    @classmethod
    def from_numpy(
        cls, sum_p: np.ndarray, sum_logp: np.ndarray, sum_entropy: np.ndarray, T: int
    ) -> SampleSums:
        """Wrap arrays (e.g. read from ``samples.h5``) without copying where possible."""
        return cls(torch.as_tensor(sum_p), torch.as_tensor(sum_logp), torch.as_tensor(sum_entropy), int(T))

    def __add__(self, other: SampleSums) -> SampleSums:
        """Sums over two disjoint sets of samples of the same voxels."""
        if not isinstance(other, SampleSums):
            return NotImplemented
        return SampleSums(
            self.sum_p + other.sum_p,
            self.sum_logp + other.sum_logp,
            self.sum_entropy + other.sum_entropy,
            self.T + other.T,
        )

    def to(self, dtype: torch.dtype) -> SampleSums:
        return SampleSums(self.sum_p.to(dtype), self.sum_logp.to(dtype), self.sum_entropy.to(dtype), self.T)


def entropy_of(p: torch.Tensor, logp: torch.Tensor | None = None, dim: int = 0) -> torch.Tensor:
    """Shannon entropy ``-Σ p log p`` (nats) along ``dim``, with ``0 log 0 = 0``.

    Args:
        p: probabilities, any shape.
        logp: their logarithms if already known (e.g. from ``log_softmax``); computed from ``p`` otherwise.
        dim: the class axis.
    """
    if logp is None:
        plogp = torch.special.xlogy(p, p)
    else:
        plogp = torch.where(p > 0, p * logp, torch.zeros((), dtype=p.dtype, device=p.device))
    return -plogp.sum(dim)


# --- the five measures -------------------------------------------------------------------------------


def confidence(x: SampleSums | torch.Tensor | np.ndarray, *, log: bool = False, dtype=torch.float64):
    """``max_k p̄_k`` per voxel, shape ``(*spatial)``. Larger means more certain."""
    return _one(x, "confidence", log=log, dtype=dtype)


def entropy(x: SampleSums | torch.Tensor | np.ndarray, *, log: bool = False, dtype=torch.float64):
    """Predictive entropy ``H[p̄]`` (nats) per voxel, shape ``(*spatial)``."""
    return _one(x, "entropy", log=log, dtype=dtype)


def expected_entropy(x: SampleSums | torch.Tensor | np.ndarray, *, log: bool = False, dtype=torch.float64):
    """Expected entropy ``E_t H[p_t]`` (nats) per voxel, shape ``(*spatial)``."""
    return _one(x, "expected_entropy", log=log, dtype=dtype)


def mutual_information(x: SampleSums | torch.Tensor | np.ndarray, *, log: bool = False, dtype=torch.float64):
    """Mutual information ``H[p̄] - E_t H[p_t]`` (nats), clamped at 0 per voxel, shape ``(*spatial)``."""
    return _one(x, "mutual_information", log=log, dtype=dtype)


def epkl(
    x: SampleSums | torch.Tensor | np.ndarray,
    *,
    pairs: Pairs = "all",
    log: bool = False,
    dtype=torch.float64,
):
    """Expected pairwise KL divergence (nats) per voxel, shape ``(*spatial)``.

    ``pairs="all"``: mean of ``KL(p_s || p_t)`` over all ``T²`` ordered pairs (``s = t`` included);
    ``pairs="distinct"``: over the ``T(T-1)`` pairs with ``s ≠ t`` (needs ``T ≥ 2``).
    """
    return _one(x, "epkl", log=log, dtype=dtype, pairs=pairs)


def uncertainty_maps(
    x: SampleSums | torch.Tensor | np.ndarray,
    measures: Iterable[str] = MEASURES,
    *,
    pairs: Pairs = "all",
    log: bool = False,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor] | dict[str, np.ndarray]:
    """Several measures at once, sharing intermediate results. Returns ``{measure: (*spatial) map}``.

    Args:
        x: :class:`SampleSums`, or raw samples ``(T, K, *spatial)`` (probabilities; log-probabilities if ``log``).
        measures: names from :data:`MEASURES`.
        pairs: EPKL pairs, ``"all"`` or ``"distinct"``.
        dtype: computation dtype (float64 by default; float32 halves memory for huge volumes).
    """
    measures = tuple(measures)
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise ValueError(f"unknown measure(s) {bad}; choose from {list(MEASURES)}")
    if pairs not in EPKL_PAIRS:
        raise ValueError(f"pairs must be one of {EPKL_PAIRS}, got {pairs!r}")
    numpy_out = isinstance(x, np.ndarray)
    sums = x if isinstance(x, SampleSums) else SampleSums.from_samples(x, log=log)
    if "epkl" in measures and pairs == "distinct" and sums.T < 2:
        raise ValueError("EPKL over distinct pairs needs T >= 2 samples")
    out = _maps_from_sums(sums, measures, pairs, dtype)
    if numpy_out:
        return {k: v.cpu().numpy() for k, v in out.items()}
    return out


def _maps_from_sums(sums: SampleSums, measures: Sequence[str], pairs: str, dtype: torch.dtype) -> dict:
    T = float(sums.T)
    want = set(measures)
    out: dict[str, torch.Tensor] = {}
    mean_p = _as_tensor(sums.sum_p).to(dtype) / T
    if "confidence" in want:
        out["confidence"] = mean_p.amax(0)
    if want & {"entropy", "mutual_information", "epkl"}:
        logmean = torch.log(mean_p)
        h_mean = -torch.where(mean_p > 0, mean_p * logmean, torch.zeros((), dtype=dtype)).sum(0)
        if "entropy" in want:
            out["entropy"] = h_mean
    if want & {"expected_entropy", "mutual_information", "epkl"}:
        e_h = _as_tensor(sums.sum_entropy).to(dtype) / T
        if "expected_entropy" in want:
            out["expected_entropy"] = e_h
    if want & {"mutual_information", "epkl"}:
        mi_raw = h_mean - e_h
        if "mutual_information" in want:
            out["mutual_information"] = mi_raw.clamp_min(0)
    if "epkl" in want:
        mean_logp = _as_tensor(sums.sum_logp).to(dtype) / T
        # Jensen gap per class: p̄_k (log p̄_k - E_t log p_tk) >= 0; a class with p̄_k = 0 contributes 0.
        gap = torch.where(mean_p > 0, mean_p * (logmean - mean_logp), torch.zeros((), dtype=dtype))
        value = (mi_raw + gap.clamp_min(0).sum(0)).clamp_min(0)
        if pairs == "distinct":
            value = value * (T / (T - 1.0))
        out["epkl"] = value
    return {m: out[m] for m in measures}


def argmax_classes(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Index of the largest entry along the (short) class axis ``dim``, uint8; ties go to the lower index.

    Same result as ``x.argmax(dim)``, but one comparison pass per class: torch's CPU argmax over a non-last
    axis is orders of magnitude slower for the (K small, many voxels) layout used here.
    """
    xs = x.unbind(dim)
    if len(xs) > 256:
        raise ValueError(f"argmax_classes: at most 256 classes (uint8), got {len(xs)}")
    best = xs[0]
    idx = torch.zeros(best.shape, dtype=torch.uint8, device=x.device)
    for k in range(1, len(xs)):
        better = xs[k] > best
        idx.masked_fill_(better, k)
        best = torch.where(better, xs[k], best)
    return idx


def mean_segmentation(x: SampleSums | torch.Tensor | np.ndarray, *, log: bool = False):
    """Argmax of ``p̄`` per voxel (ties go to the lower class), uint8 ``(*spatial)``."""
    numpy_out = isinstance(x, np.ndarray)
    sums = x if isinstance(x, SampleSums) else SampleSums.from_samples(x, log=log)
    seg = argmax_classes(_as_tensor(sums.sum_p), 0)
    return seg.numpy() if numpy_out else seg


def _one(x, name: str, *, log: bool, dtype, pairs: str = "all"):
    return uncertainty_maps(x, (name,), pairs=pairs, log=log, dtype=dtype)[name]  # type: ignore[arg-type]


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))
