"""Calibration metrics from per-bin sums: ECE (top-label, class-wise, restricted to a region), MCE, ACE,
Brier score and negative log-likelihood.

Binning (equal width, as torchmetrics does it): with ``n_bins`` bins and edges ``e_i = i / n_bins``, a confidence
``c`` falls into bin ``i`` when ``e_i <= c < e_{i+1}``; a confidence of exactly 1.0 falls into one extra bin of its
own (index ``n_bins``, lower = upper = 1.0). Every bin array therefore has ``n_bins + 1`` entries. Keeping this extra
bin is what makes the values equal torchmetrics' ``BinaryCalibrationError``/``MulticlassCalibrationError`` exactly,
and it matters in practice: probabilities stored as float16 round everything above 0.99951 to exactly 1.0.

A :class:`BinSums` holds, per bin, the number of samples, the sum of their confidences and the sum of their
accuracies (0/1 correctness, or a soft target). Sums add, so per-case bins merge into a dataset-level ECE exactly,
across cases and across shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: probabilities are clamped at this value before ``log`` in :func:`nll` (stored float16 maps contain exact zeros)
NLL_EPS = 1e-8


@dataclass
class BinSums:
    """Per-bin sums of one calibration problem; arrays of shape ``(n_bins + 1,)``, float64.

    ``count[i]`` samples in bin ``i``, ``conf[i]`` the sum of their confidences, ``acc[i]`` the sum of their
    accuracies. The last entry is the bin of confidences equal to 1.0 exactly.
    """

    count: np.ndarray
    conf: np.ndarray
    acc: np.ndarray

    @property
    def n_bins(self) -> int:
        """Number of equal-width bins (the arrays hold one more: the ``c == 1`` bin)."""
        return len(self.count) - 1

    @classmethod
    def empty(cls, n_bins: int) -> BinSums:
        z = np.zeros(n_bins + 1, dtype=np.float64)
        return cls(z.copy(), z.copy(), z.copy())

    def __add__(self, other: BinSums) -> BinSums:
        if self.n_bins != other.n_bins:
            raise ValueError(f"cannot merge bins of {self.n_bins} and {other.n_bins} bins")
        return BinSums(self.count + other.count, self.conf + other.conf, self.acc + other.acc)

    @property
    def total(self) -> float:
        return float(self.count.sum())

    def mean_confidence(self) -> np.ndarray:
        """Mean confidence per bin; 0 for empty bins. Shape ``(n_bins + 1,)``."""
        return np.divide(self.conf, self.count, out=np.zeros_like(self.conf), where=self.count > 0)

    def accuracy(self) -> np.ndarray:
        """Mean accuracy per bin; 0 for empty bins. Shape ``(n_bins + 1,)``."""
        return np.divide(self.acc, self.count, out=np.zeros_like(self.acc), where=self.count > 0)

    def ece(self) -> float:
        """Expected calibration error ``sum_i (n_i / N) |acc_i - conf_i|``; NaN when there are no samples."""
        n = self.total
        if n == 0:
            return float("nan")
        return float(np.sum(np.abs(self.acc - self.conf)) / n)

    def mce(self) -> float:
        """Maximum calibration error ``max_i |acc_i - conf_i|`` over non-empty bins; NaN when there are none."""
        if self.total == 0:
            return float("nan")
        gap = np.abs(self.accuracy() - self.mean_confidence())
        return float(gap[self.count > 0].max())

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper edge of each bin (the last bin is ``[1, 1]``)."""
        e = np.linspace(0.0, 1.0, self.n_bins + 1)
        return np.append(e[:-1], 1.0), np.append(e[1:], 1.0)


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence, ``(N,)`` -> ``(N,)`` int64 in ``[0, n_bins]`` (``n_bins`` only for ``c == 1``).

    Confidences must lie in [0, 1]; values outside raise ``ValueError``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    c = np.asarray(confidence, dtype=np.float64).ravel()
    if c.size and (c.min() < 0.0 or c.max() > 1.0):
        raise ValueError(f"confidences must lie in [0, 1], got range [{c.min():.6g}, {c.max():.6g}]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # floor(c * B) is the bin up to rounding; one correction step makes it exactly
    # searchsorted(edges, c, side="right") - 1, i.e. edges[i] <= c < edges[i + 1], at a fraction of the cost
    idx = np.minimum(np.floor(c * n_bins).astype(np.int64), n_bins)
    idx -= c < edges[idx]
    nxt = np.minimum(idx + 1, n_bins)
    idx += (idx < n_bins) & (c >= edges[nxt])
    return idx


def bin_sums(
    confidence: np.ndarray, accuracy: np.ndarray, n_bins: int, index: np.ndarray | None = None
) -> BinSums:
    """Per-bin sums of confidences ``(N,)`` in [0, 1] and accuracies ``(N,)`` (bool or float in [0, 1]).

    ``index`` may pass precomputed :func:`bin_index` values (e.g. the same confidences scored against several
    raters).
    """
    c = np.asarray(confidence, dtype=np.float64).ravel()
    a = np.asarray(accuracy, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise ValueError(f"confidence {c.shape} and accuracy {a.shape} differ in size")
    idx = bin_index(c, n_bins) if index is None else np.asarray(index).ravel()
    m = n_bins + 1
    return BinSums(
        np.bincount(idx, minlength=m).astype(np.float64),
        np.bincount(idx, weights=c, minlength=m),
        np.bincount(idx, weights=a, minlength=m),
    )


def top_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and predicted class of class probabilities ``(K, *spatial)``.

    Returns ``(confidence, label)``, both ``(*spatial)``: ``max_k p_k`` (float64) and ``argmax_k p_k`` (first
    index on ties).
    """
    p = np.asarray(probs)
    label = np.argmax(p, axis=0)
    conf = np.take_along_axis(p, label[None], axis=0)[0].astype(np.float64)
    return conf, label


def toplabel_bin_sums(probs: np.ndarray, labels: np.ndarray, n_bins: int, mask: np.ndarray | None = None) -> BinSums:
    """Top-label bins of class probabilities ``(K, *spatial)`` against integer labels ``(*spatial)``.

    ``mask`` (bool, ``(*spatial)``) restricts the voxels counted (the foreground variant).
    """
    conf, pred = top_label(probs)
    correct = pred == np.asarray(labels)
    if mask is not None:
        conf, correct = conf[mask], correct[mask]
    return bin_sums(conf, correct, n_bins)


def classwise_bin_sums(
    probs: np.ndarray, labels: np.ndarray, n_bins: int, masks: list[np.ndarray | None] | None = None
) -> list[BinSums]:
    """Class-wise bins: for each class ``k`` the binary problem ``p_k`` against ``labels == k``.

    probs ``(K, *spatial)``, labels ``(*spatial)``; ``masks`` optionally one bool ``(*spatial)`` mask (or None) per
    class restricting the voxels of that class. Returns ``K`` :class:`BinSums`.
    """
    p = np.asarray(probs)
    lab = np.asarray(labels)
    out = []
    for k in range(p.shape[0]):
        conf, acc = p[k], lab == k
        m = None if masks is None else masks[k]
        if m is not None:
            conf, acc = conf[m], acc[m]
        out.append(bin_sums(conf, acc, n_bins))
    return out


def ece(confidence: np.ndarray, accuracy: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of confidences ``(N,)`` against accuracies ``(N,)`` (see module docstring)."""
    return bin_sums(confidence, accuracy, n_bins).ece()


def mce(confidence: np.ndarray, accuracy: np.ndarray, n_bins: int = 15) -> float:
    """Maximum calibration error over non-empty equal-width bins."""
    return bin_sums(confidence, accuracy, n_bins).mce()


def ace(confidence: np.ndarray, accuracy: np.ndarray, n_bins: int = 15, order: np.ndarray | None = None) -> float:
    """Adaptive calibration error with equal-mass bins.

    Samples are sorted by confidence (stable sort) and split into ``n_bins`` consecutive groups whose sizes differ
    by at most one (``numpy.array_split``); ``ACE = sum_b (n_b / N) |mean acc_b - mean conf_b|``. Fewer samples than
    bins gives one sample per bin. ``order`` may pass a precomputed stable argsort of ``confidence``. NaN when empty.

    Equal-mass bin edges depend on the data, so ACE does not merge across cases; report it per case.
    """
    c = np.asarray(confidence, dtype=np.float64).ravel()
    a = np.asarray(accuracy, dtype=np.float64).ravel()
    n = c.size
    if n == 0:
        return float("nan")
    o = np.argsort(c, kind="stable") if order is None else order
    b = min(n_bins, n)
    # group g covers sorted positions [start_g, start_g + size_g); sizes as numpy.array_split makes them
    base, extra = divmod(n, b)
    sizes = np.full(b, base, dtype=np.int64)
    sizes[:extra] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cs = np.add.reduceat(c[o], starts)
    as_ = np.add.reduceat(a[o], starts)
    return float(np.sum(np.abs(as_ - cs)) / n)


def brier(probs: np.ndarray, target: np.ndarray) -> float:
    """Multiclass Brier score ``mean_voxels sum_k (p_k - y_k)^2``.

    probs ``(K, *spatial)``; target either integer labels ``(*spatial)`` or soft labels ``(K, *spatial)`` (e.g. the
    fraction of raters choosing each class). Range [0, 2].
    """
    p = np.asarray(probs, dtype=np.float64)
    y = _as_soft(target, p.shape)
    return float(np.mean(np.sum((p - y) ** 2, axis=0)))


def binary_brier(prob: np.ndarray, target: np.ndarray) -> float:
    """Binary Brier score ``mean (p - y)^2`` of one class: prob ``(*spatial)``, target bool or soft ``(*spatial)``."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def nll(probs: np.ndarray, target: np.ndarray, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood (cross-entropy, nats) ``-mean_voxels sum_k y_k log max(p_k, eps)``.

    probs ``(K, *spatial)``; target integer labels ``(*spatial)`` or soft labels ``(K, *spatial)``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if np.asarray(target).shape == p.shape[1:]:
        lab = np.asarray(target).astype(np.int64)
        pk = np.take_along_axis(p, lab[None], axis=0)[0]
        return float(-np.mean(np.log(np.maximum(pk, eps))))
    y = _as_soft(target, p.shape)
    return float(-np.mean(np.sum(y * np.log(np.maximum(p, eps)), axis=0)))


def _as_soft(target: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    t = np.asarray(target)
    if t.shape == tuple(shape):
        return t.astype(np.float64)
    if t.shape == tuple(shape[1:]):
        k = np.arange(shape[0]).reshape((-1,) + (1,) * t.ndim)
        return (t[None] == k).astype(np.float64)
    raise ValueError(f"target shape {t.shape} fits neither labels {shape[1:]} nor soft labels {shape}")
