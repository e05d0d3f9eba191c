"""Agreement between the T sampled segmentations, exact from streamed counts (O(1) memory in T).

Inputs (written by ``uqseg sample`` per case and method, see :mod:`uqseg_cli.bayes.accumulator`):

- ``votes`` ``(K, *spatial)``: per voxel, how many of the T samples' argmax is class k;
- ``volumes`` ``(T, K)``: ml of class k in sample t's argmax, |A_t| (any unit works: only ratios are used);
- ``overlap_volumes`` ``(T, K)``: ml of ``argmax_t = k`` and ``S = k`` for the final segmentation S, |A_t ∩ S|.

Foreground is every class but 0 taken together (``fg_votes = T - votes[0]``), as in the region features; the
per-class variants take one row of ``votes``. Conventions: when every set involved is empty the agreement is
perfect (1.0), as for the Dice of two empty masks.

- :func:`iou_samples` (Roy et al. 2019): |voxels where all T samples are foreground| / |voxels where any is|.
- :func:`pairwise_dice`: Dice over all ordered pairs of distinct samples, pooled —
  ``Σ_{t≠s} 2|A_t ∩ A_s| / Σ_{t≠s} (|A_t| + |A_s|)`` — which equals ``Σ_v n_v (n_v - 1) / ((T - 1) Σ_t |A_t|)``
  with ``n_v`` the foreground votes of voxel v. (The unweighted mean of the T(T-1) per-pair Dice values would need
  every pair's intersection, i.e. all T masks; the pooled form weighs each pair by its size and is exact from
  counts.)
- :func:`dice_to_final`: ``mean_t 2|A_t ∩ S| / (|A_t| + |S|)``, exact per sample.
- :func:`soft_dice`: ``2 Σ p̄ S / (Σ p̄ + |S|)`` between the mean foreground probability and the segmentation.
"""

from __future__ import annotations

import numpy as np

from uqseg_cli.metrics.overlap import dice_from_counts


def foreground_votes(votes: np.ndarray, T: int) -> np.ndarray:
    """Per voxel, the number of samples whose argmax is any foreground class: ``T - votes[0]`` (int64)."""
    return int(T) - np.asarray(votes, dtype=np.int64)[0]


def iou_samples(fg_votes: np.ndarray, T: int) -> float:
    """|all T samples foreground| / |any sample foreground|; 1.0 when no sample has foreground."""
    n = np.asarray(fg_votes)
    union = int(np.count_nonzero(n > 0))
    return 1.0 if union == 0 else int(np.count_nonzero(n >= int(T))) / union


def pairwise_dice(fg_votes: np.ndarray, T: int, sample_sizes: np.ndarray) -> float:
    """Pooled Dice over all pairs of distinct samples (see the module text); 1.0 for T < 2 or no foreground.

    ``sample_sizes``: ``(T,)`` |A_t| in voxels (the counts must be in voxels here, as ``fg_votes`` is).
    """
    T = int(T)
    total = float(np.sum(sample_sizes))
    if T < 2 or total <= 0:
        return 1.0
    n = np.asarray(fg_votes, dtype=np.float64)
    return float(np.sum(n * (n - 1.0)) / ((T - 1) * total))


def dice_to_final(sample_sizes: np.ndarray, overlaps: np.ndarray, final_size: float) -> float:
    """Mean over samples of Dice(A_t, S) from ``|A_t|`` ``(T,)``, ``|A_t ∩ S|`` ``(T,)`` and ``|S|`` (one unit)."""
    return float(dice_from_counts(overlaps, sample_sizes, float(final_size)).mean())


def soft_dice(mean_fg_prob: np.ndarray, seg_fg: np.ndarray) -> float:
    """``2 Σ p̄ S / (Σ p̄ + |S|)`` for the mean foreground probability and the binary segmentation; 1.0 if both 0."""
    p = np.asarray(mean_fg_prob, dtype=np.float64)
    s = np.asarray(seg_fg, dtype=bool)
    return dice_from_counts(p[s].sum(), float(p.sum()), float(s.sum()))


def agreement_features(
    votes: np.ndarray,
    T: int,
    volumes: np.ndarray,
    overlap_volumes: np.ndarray | None,
    seg: np.ndarray,
    voxel_ml: float,
    mean_fg_prob: np.ndarray | None = None,
) -> dict[str, float]:
    """The foreground agreement features of one case and method.

    Args:
        votes: ``(K, *spatial)`` vote counts; T: samples; volumes: ``(T, K)`` ml per sample and class;
        overlap_volumes: ``(T, K)`` ml of ``argmax_t = k and S = k`` (None: ``dice_to_final`` is nan);
        seg: ``(*spatial)`` final labels S; voxel_ml: ml of one voxel; mean_fg_prob: ``(*spatial)`` p̄ of the
        foreground (1 - p̄_0), or None (``soft_dice`` is nan).
    Returns: ``iou_samples``, ``pairwise_dice``, ``dice_to_final``, ``soft_dice`` and ``vote_entropy`` (mean over
    the voxels any sample calls foreground of the binary entropy of the vote fraction, nats).
    """
    fg = foreground_votes(votes, T)
    vol = np.asarray(volumes, dtype=np.float64)
    sizes = vol[:, 1:].sum(1) / voxel_ml  # |A_t| in voxels (foreground = any class but 0)
    seg_fg = np.asarray(seg) > 0
    out = {
        "iou_samples": iou_samples(fg, T),
        "pairwise_dice": pairwise_dice(fg, T, np.rint(sizes)),
    }
    if overlap_volumes is not None:
        # |A_t ∩ S| for the union of foreground classes is not Σ_k |A_t=k ∩ S=k| when classes are confused;
        # the per-class sum is the multi-class overlap (equal to the foreground overlap for K = 2)
        ov = np.asarray(overlap_volumes, dtype=np.float64)[:, 1:].sum(1) / voxel_ml
        out["dice_to_final"] = dice_to_final(sizes, ov, float(np.count_nonzero(seg_fg)))
    else:
        out["dice_to_final"] = float("nan")
    out["soft_dice"] = soft_dice(mean_fg_prob, seg_fg) if mean_fg_prob is not None else float("nan")
    any_fg = fg > 0
    if np.any(any_fg):
        f = fg[any_fg] / float(T)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -(np.where(f > 0, f * np.log(f), 0.0) + np.where(f < 1, (1 - f) * np.log(1 - f), 0.0))
        out["vote_entropy"] = float(h.mean())
    else:
        out["vote_entropy"] = 0.0
    return out


def shape_features(seg: np.ndarray) -> dict[str, float]:
    """Features of the final segmentation alone: connected foreground components (face connectivity), the
    foreground fraction of the grid, and the fraction of the foreground contour that lies on the grid's edge
    (a lesion cut by the photo's border; 0 without foreground)."""
    from scipy import ndimage

    fg = np.asarray(seg) > 0
    n_comp = int(ndimage.label(fg)[1]) if fg.any() else 0
    if not fg.any():
        return {"components": 0.0, "area_fraction": 0.0, "border_fraction": 0.0}
    inner = ndimage.binary_erosion(fg, border_value=1)  # the array edge is not a contour by itself here
    contour = fg & ~inner
    edge = np.zeros_like(fg)
    for ax in range(fg.ndim):
        idx = [slice(None)] * fg.ndim
        idx[ax] = 0
        edge[tuple(idx)] = True
        idx[ax] = -1
        edge[tuple(idx)] = True
    on_edge = fg & edge
    n_contour = int(np.count_nonzero(contour | on_edge))
    return {
        "components": float(n_comp),
        "area_fraction": float(fg.mean()),
        "border_fraction": float(np.count_nonzero(on_edge)) / n_contour if n_contour else 0.0,
    }
