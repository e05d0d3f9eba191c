"""Per-case multi-rater evaluation (the CURVAS protocol) and its dataset-level summary.

:func:`evaluate_case` turns one case's class probabilities, segmentation and rater masks into table rows: one row
per foreground class (consensus/dissensus, Dice variants, the CURVAS confidence, class-wise calibration, volumes and
volume CRPS) and one row ``class = "all"`` (top-label calibration, Brier score, NLL), plus the per-bin calibration
sums (one row per rater, variant, class and bin) from which :func:`pooled_calibration` computes dataset-level ECE
exactly, however the cases were split over shards. :func:`summarize` condenses the per-case rows into mean, std and
median per method, class and metric. No file handling here: :func:`evaluate_case` reads the arrays it is given
(numpy arrays or h5py datasets) slab by slab along the first spatial axis, so memory stays bounded on large CT.

The pieces follow torchmetrics' functional layer: *validate* (:func:`_validate_case`, the per-slab value checks),
*update* (:func:`_slab_sums` turns a slab into an additive :class:`CaseSums`: per rater :class:`RaterSums`, per
foreground class :class:`ClassCounts`; slabs add up with ``+``), *compute* (:func:`rater_calibration` for the ECE
family from the bins, :func:`class_row`, :func:`all_row`, :func:`case_bin_rows`; Dice from counts by
:func:`uqseg_cli.metrics.overlap.dice_from_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from uqseg_cli.metrics import calibration as cal
from uqseg_cli.metrics import crps as crps_mod
from uqseg_cli.metrics.multirater import (
    consensus,
    curvas2024_dice_from_row_counts,
    curvas2024_row_counts,
    curvas_crop_box,
    majority_vote,
    rater_fraction,
    soft_labels,
    voxel_volume_ml,
)
from uqseg_cli.metrics.overlap import dice_from_counts

PROTOCOLS = ("uqseg", "curvas2024")
#: number of bins the CURVAS 2024 evaluation uses for its top-label ECE
CURVAS2024_BINS = 50
DEFAULT_BINS = 15
#: tolerance on probabilities outside [0, 1] (float16 storage) before a case is refused
PROB_TOLERANCE = 1e-3

CLASS_COLUMNS = [
    "n_raters",
    "consensus_voxels",
    "dissensus_voxels",
    "union_voxels",
    "consensus_ratio",
    "dissensus_fraction",
    "dice_consensus",
    "dice_consensus_curvas",
    "dice_rater_mean",
    "dice_rater_min",
    "dice_rater_max",
    "dice_majority",
    "soft_dice_mean_rater",
    "confidence",
    "ece_class",
    "ece_class_fg",
    "mce_class",
    "brier_class",
    "brier_class_soft",
    "volume_pred_ml",
    "volume_seg_ml",
    "volume_rater_mean_ml",
    "volume_rater_std_ml",
]
ALL_COLUMNS = ["ece", "ece_fg", "mce", "ace", "ece_classwise", "brier", "brier_soft", "nll"]
BIN_COLUMNS = [
    "method",
    "case",
    "rater",
    "variant",
    "class",
    "class_index",
    "bin",
    "lower",
    "upper",
    "count",
    "sum_confidence",
    "sum_accuracy",
]
#: bins variant -> (metric name of its ECE, of its MCE or None, row class: "all" or per class)
VARIANTS = {
    "toplabel": ("ece", "mce"),
    "toplabel_fg": ("ece_fg", None),
    "class": ("ece_class", "mce_class"),
    "class_fg": ("ece_class_fg", None),
}


@dataclass(frozen=True)
class EvalOptions:
    """What to compute. ``protocol="curvas2024"`` crops to the in-plane box of ``image > 0`` and replaces the
    background probability by ``1 - sum(foreground)`` (clipped at 0) before every metric."""

    n_bins: int = DEFAULT_BINS
    crps_modes: tuple[str, ...] = ("gaussian",)
    protocol: str = "uqseg"

    def __post_init__(self) -> None:
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {self.n_bins}")
        bad = [m for m in self.crps_modes if m not in crps_mod.CRPS_MODES]
        if bad:
            raise ValueError(f"unknown CRPS mode(s) {bad}; choose from {crps_mod.CRPS_MODES}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {PROTOCOLS}")


@dataclass
class CaseInput:
    """One case (and method) to evaluate.

    probabilities ``(K, *spatial)`` in [0, 1]; segmentation ``(*spatial)`` labels (None: argmax of the
    probabilities); raters ``(R, *spatial)`` labels; spacing in mm per spatial axis; image ``(C, *spatial)`` (needed
    by the curvas2024 crop); sample_volumes ``(T, K)`` ml per stochastic sample (needed by the ensemble CRPS).
    """

    case_id: str
    method: str
    probabilities: np.ndarray
    raters: np.ndarray
    spacing: Sequence[float]
    segmentation: np.ndarray | None = None
    image: np.ndarray | None = None
    sample_volumes: np.ndarray | None = None


def crps_column(mode: str) -> str:
    return f"crps_{mode}_ml"


#: default slab size of :func:`evaluate_case` in voxels (whole slices along the first spatial axis, at least one;
#: 2**18 = one 512 x 512 CT slice): ~150 bytes of temporaries per slab voxel, ~40 MB
SLAB_VOXELS = 1 << 18


def _shape(a: object) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)  # type: ignore[union-attr]


def _lazy(a: object) -> object:
    """Array-likes with ``shape`` and slicing (numpy arrays, h5py datasets, :class:`ScaledArray`) are read slab by
    slab; anything else (nested lists) is converted once."""
    return a if hasattr(a, "shape") and hasattr(a, "__getitem__") else np.asarray(a)


class ScaledArray:
    """A lazily divided array: ``ScaledArray(ds, t)[idx] == ds[idx].astype(float64) / t`` (e.g. ``sum_p / T`` read
    slab by slab from an h5py dataset)."""

    def __init__(self, data: object, divisor: float):
        self.data = data
        self.divisor = divisor
        self.shape = _shape(data)
        self.ndim = len(self.shape)

    def __getitem__(self, idx: object) -> np.ndarray:
        return np.asarray(self.data[idx]).astype(np.float64) / self.divisor  # type: ignore[index]


def _where(inp: CaseInput) -> str:
    return f"case {inp.case_id}" + (f", method {inp.method}" if inp.method else "")


def _check_shapes(inp: CaseInput, p: object, r: object, seg: object, num_classes: int) -> None:
    ps, rs = _shape(p), _shape(r)
    where = _where(inp)
    if len(ps) < 2 or ps[0] != num_classes:
        raise ValueError(f"{where}: probabilities have shape {ps}, expected ({num_classes}, *spatial)")
    if len(rs) != len(ps) or rs[1:] != ps[1:]:
        raise ValueError(f"{where}: raters have shape {rs}, expected (R, {', '.join(map(str, ps[1:]))})")
    if rs[0] < 1:
        raise ValueError(f"{where}: no rater masks")


def _slabs(n0: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n0)) for a in range(0, n0, step)]


def _validate_full(inp: CaseInput, p: object, r: object, seg: object, num_classes: int, step: int) -> None:
    """The value checks over the whole case, slab by slab, raising the first failure in the order (and with the
    whole-case numbers) of the one-array check; returns when everything is valid."""
    where = _where(inp)
    ps = _shape(p)
    n0 = ps[1]
    finite, pmin, pmax = True, np.inf, -np.inf
    rmin = np.full(_shape(r)[0], np.iinfo(np.int64).max, dtype=np.int64)
    rmax = np.full(_shape(r)[0], np.iinfo(np.int64).min, dtype=np.int64)
    for a, b in _slabs(n0, step):
        ps_ = np.asarray(p[:, a:b], dtype=np.float64)  # type: ignore[index]
        finite = finite and bool(np.all(np.isfinite(ps_)))
        if ps_.size:
            pmin, pmax = min(pmin, float(ps_.min())), max(pmax, float(ps_.max()))
        rs_ = np.asarray(r[:, a:b]).reshape(len(rmin), -1)  # type: ignore[index]
        if rs_.shape[1]:
            rmin = np.minimum(rmin, rs_.min(axis=1))
            rmax = np.maximum(rmax, rs_.max(axis=1))
    if not finite:
        raise ValueError(f"{where}: probabilities contain NaN or infinity")
    if pmin < -PROB_TOLERANCE or pmax > 1 + PROB_TOLERANCE:
        raise ValueError(f"{where}: probabilities outside [0, 1] (range {pmin:.4g} .. {pmax:.4g})")
    if rmin.min() < 0 or rmax.max() >= num_classes:
        bad = int(np.argmax((rmax >= num_classes) | (rmin < 0)))
        raise ValueError(
            f"{where}: rater {bad + 1} has label {int(rmax[bad])} but the model has {num_classes} classes "
            f"(labels 0..{num_classes - 1})"
        )
    if seg is not None and _shape(seg) != ps[1:]:
        raise ValueError(f"{where}: segmentation has shape {_shape(seg)}, expected {ps[1:]}")


def _slab_ok(p: np.ndarray, r: np.ndarray, num_classes: int) -> bool:
    return bool(
        np.all(np.isfinite(p))
        and (p.size == 0 or (p.min() >= -PROB_TOLERANCE and p.max() <= 1 + PROB_TOLERANCE))
        and (r.size == 0 or (r.min() >= 0 and r.max() < num_classes))
    )


def _crop_box_slabbed(image: object, step: int) -> tuple[slice, slice]:
    """:func:`curvas_crop_box` of an image ``(C, *spatial)`` read slab by slab along its first spatial axis."""
    img = _lazy(image)
    shp = _shape(img)
    if len(shp) < 3:
        return curvas_crop_box(np.asarray(img))
    plane = np.zeros(shp[-2:], dtype=bool)
    rows_any = np.zeros(shp[-2], dtype=bool) if len(shp) == 3 else None
    for a, b in _slabs(shp[1], step):
        part = np.asarray(img[:, a:b]) > 0  # type: ignore[index]
        if rows_any is not None:  # (C, X, Y): the slab splits the rows
            rows_any[a:b] |= part.any(axis=(0, 2))
            plane[a:b] |= part.any(axis=0)
        else:
            plane |= part.reshape(-1, *shp[-2:]).any(axis=0)
    return curvas_crop_box(plane[None])


def evaluate_case(
    inp: CaseInput, class_names: Sequence[str], opts: EvalOptions, slab_voxels: int = SLAB_VOXELS
) -> tuple[list[dict], list[dict]]:
    """Evaluate one case against its raters. Returns ``(rows, bin_rows)`` (see module docstring and
    ``docs/evaluate.md`` for the columns). Raises ``ValueError`` with a one-line message on inconsistent input.

    The arrays of ``inp`` may be numpy arrays or anything sliceable with a ``shape`` (h5py datasets,
    :class:`ScaledArray`): they are read in slabs of whole slices along the first spatial axis, about
    ``slab_voxels`` voxels each, and every metric is combined from per-slab sums, so memory stays bounded by the
    slab size plus, for ACE, the top-label confidence (float32 when exact, else float64) and one bool per rater per
    voxel. Results equal a one-slab evaluation up to float rounding of the sums."""
    k_all = len(class_names)
    p_src, r_src = _lazy(inp.probabilities), _lazy(inp.raters)
    seg_src = None if inp.segmentation is None else _lazy(inp.segmentation)
    _check_shapes(inp, p_src, r_src, seg_src, k_all)
    spatial = _shape(p_src)[1:]
    step = max(1, int(slab_voxels) // max(1, int(np.prod(spatial[1:], dtype=np.int64))))
    voxel_ml, region, sv = _validate_case(inp, p_src, r_src, seg_src, k_all, opts, step)
    state = _accumulate(inp, p_src, r_src, seg_src, k_all, opts, region, step)
    return _finish(inp, class_names, opts, state, voxel_ml, sv)


# -- validate ------------------------------------------------------------------------------------------------------


def _validate_case(inp: CaseInput, p_src: object, r_src: object, seg_src: object, k_all: int, opts: EvalOptions,
                   step: int) -> tuple[float, list[slice], np.ndarray | None]:
    """The checks that need no voxel values (segmentation shape, spacing, the curvas2024 image, the ensemble CRPS
    sample volumes). A failure first runs the full value checks, so that bad values are reported before a bad
    option, as a whole-array check would. Returns the voxel volume (ml), the evaluated region (one slice per
    spatial axis: the curvas2024 in-plane crop) and the sample volumes ``(T, K)`` (None without the ensemble CRPS).
    """
    spatial = _shape(p_src)[1:]

    def fail_after_validation(msg: str) -> None:
        _validate_full(inp, p_src, r_src, seg_src, k_all, step)
        raise ValueError(msg)

    if seg_src is not None and _shape(seg_src) != spatial:
        fail_after_validation(f"{_where(inp)}: segmentation has shape {_shape(seg_src)}, expected {spatial}")
    try:
        voxel_ml = voxel_volume_ml(inp.spacing)
    except ValueError:
        _validate_full(inp, p_src, r_src, seg_src, k_all, step)
        raise
    if len(tuple(inp.spacing)) != len(spatial):
        fail_after_validation(
            f"case {inp.case_id}: spacing {tuple(inp.spacing)} does not match {len(spatial)} spatial axes"
        )
    region = [slice(0, n) for n in spatial]
    if opts.protocol == "curvas2024":
        if inp.image is None:
            fail_after_validation(f"case {inp.case_id}: the curvas2024 protocol needs the image (for its crop)")
        region[-2], region[-1] = _crop_box_slabbed(inp.image, step)
    sv = None
    if "ensemble" in opts.crps_modes:
        if inp.sample_volumes is None:
            fail_after_validation(
                f"case {inp.case_id}: the ensemble CRPS needs per-sample volumes (a samples.h5 input)"
            )
        sv = np.asarray(inp.sample_volumes, dtype=np.float64)
        if sv.ndim != 2 or sv.shape[1] != k_all:
            fail_after_validation(f"case {inp.case_id}: sample volumes have shape {sv.shape}, expected (T, {k_all})")
    return voxel_ml, region, sv


def _accumulate(inp: CaseInput, p_src: object, r_src: object, seg_src: object, k_all: int, opts: EvalOptions,
                region: list[slice], step: int) -> CaseSums:
    """Read the case slab by slab (value checks per slab; the full checks on the first bad slab), restrict each
    slab to the region (and apply the curvas2024 background rule), and add up its :class:`CaseSums`."""
    state: CaseSums | None = None
    r0 = region[0]
    for a, b in _slabs(_shape(p_src)[1], step):
        p_raw = np.asarray(p_src[:, a:b], dtype=np.float64)  # type: ignore[index]
        r_raw = np.asarray(r_src[:, a:b])  # type: ignore[index]
        if not _slab_ok(p_raw, r_raw, k_all):
            _validate_full(inp, p_src, r_src, seg_src, k_all, step)
        lo, hi = max(a, r0.start), min(b, r0.stop)
        if lo >= hi:
            continue
        local = (slice(lo - a, hi - a), *region[1:])
        seg = np.argmax(p_raw, axis=0) if seg_src is None else np.asarray(seg_src[a:b])  # type: ignore[index]
        p = np.clip(p_raw, 0.0, 1.0)[(slice(None), *local)]
        del p_raw
        seg = seg[local]
        raters = r_raw[(slice(None), *local)]
        if opts.protocol == "curvas2024":
            p = np.concatenate([np.clip(1.0 - p[1:].sum(axis=0), 0.0, 1.0)[None], p[1:]], axis=0)
        slab = _slab_sums(p, seg, raters, opts.n_bins)
        state = slab if state is None else state + slab
    if state is None:  # no voxel in the evaluated region
        state = CaseSums.empty(_shape(r_src)[0], k_all, opts.n_bins)
    return state


# -- update: additive per-slab state -------------------------------------------------------------------------------


@dataclass
class RaterSums:
    """Additive calibration sums of one case against one rater.

    ``toplabel`` / ``toplabel_fg``: top-label bins over every voxel / over the foreground region (predicted or any
    rater foreground); ``classwise[k]``: bins of ``p_k`` against ``rater == k`` over every voxel; ``classwise_fg[k]``
    the same over the region of class ``k`` (predicted or any rater says ``k``; None for the background);
    ``brier``, ``log_lik``, ``brier_class[k]``: voxel sums of the multiclass Brier score, of ``log p_label`` and of
    the binary Brier score of class ``k``.
    """

    toplabel: cal.BinSums
    toplabel_fg: cal.BinSums
    classwise: list[cal.BinSums]
    classwise_fg: list[cal.BinSums | None]
    brier: float
    log_lik: float
    brier_class: list[float]

    @classmethod
    def empty(cls, k_all: int, n_bins: int) -> RaterSums:
        e = cal.BinSums.empty
        return cls(e(n_bins), e(n_bins), [e(n_bins) for _ in range(k_all)],
                   [None] + [e(n_bins) for _ in range(1, k_all)], 0, 0, [0] * k_all)

    def __add__(self, o: RaterSums) -> RaterSums:
        return RaterSums(
            self.toplabel + o.toplabel,
            self.toplabel_fg + o.toplabel_fg,
            [a + b for a, b in zip(self.classwise, o.classwise, strict=True)],
            [None if a is None else a + b for a, b in zip(self.classwise_fg, o.classwise_fg, strict=True)],
            self.brier + o.brier,
            self.log_lik + o.log_lik,
            [a + b for a, b in zip(self.brier_class, o.brier_class, strict=True)],
        )


@dataclass
class ClassCounts:
    """Additive counts (voxels) and sums of one foreground class ``k``.

    Consensus regions (``consensus_fg`` every rater says ``k``, ``consensus_bg`` none does, ``dissensus`` the
    rest); the segmentation ``|S_k|`` and per rater ``|R_k|``, ``|S_k ∩ R_k|`` (``(R,)`` int64); the consensus Dice
    counts (``kept`` = ``S_k`` without the dissensus, ``kept_inter`` = its overlap with the consensus foreground);
    the majority vote ``|M_k|`` and ``|S_k ∩ M_k|``; the soft Dice sums ``Σ p_k``, ``Σ q_k``, ``Σ p_k q_k`` (``q``
    the fraction of raters saying ``k``); ``Σ p_k`` over the consensus foreground / background (CURVAS
    confidence); ``Σ (p_k - q_k)²``; and the CURVAS 2024 per-row counts ``(inter, pred, ref)``, one array per slab.
    """

    consensus_fg: int
    dissensus: int
    consensus_bg: int
    seg: int
    rater: np.ndarray
    rater_inter: np.ndarray
    kept: int
    kept_inter: int
    majority: int
    majority_inter: int
    prob: float
    rater_frac: float
    prob_frac: float
    prob_consensus_fg: float
    prob_consensus_bg: float
    brier_soft: float
    row_counts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]

    @classmethod
    def empty(cls, n_raters: int) -> ClassCounts:
        z = np.zeros(n_raters, dtype=np.int64)
        return cls(0, 0, 0, 0, z, z.copy(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ([], [], []))

    def __add__(self, o: ClassCounts) -> ClassCounts:
        vals = [getattr(self, f.name) + getattr(o, f.name) for f in fields(self) if f.name != "row_counts"]
        rows = tuple(a + b for a, b in zip(self.row_counts, o.row_counts, strict=True))
        return ClassCounts(*vals, row_counts=rows)  # type: ignore[arg-type]


@dataclass
class CaseSums:
    """The whole additive state of one case: voxels counted, per rater :class:`RaterSums`, the soft-label Brier
    sum, per foreground class :class:`ClassCounts` (``classes[k - 1]``), and the ACE inputs (top-label
    confidences per slab, float32 when exact, and per rater the packed correctness bits per slab)."""

    n_vox: int
    raters: list[RaterSums]
    brier_soft: float
    classes: list[ClassCounts]
    ace_conf: list[np.ndarray]
    ace_correct: list[list[np.ndarray]]

    @classmethod
    def empty(cls, n_raters: int, k_all: int, n_bins: int) -> CaseSums:
        return cls(0, [RaterSums.empty(k_all, n_bins) for _ in range(n_raters)], 0,
                   [ClassCounts.empty(n_raters) for _ in range(1, k_all)], [], [[] for _ in range(n_raters)])

    def __add__(self, o: CaseSums) -> CaseSums:
        return CaseSums(
            self.n_vox + o.n_vox,
            [a + b for a, b in zip(self.raters, o.raters, strict=True)],
            self.brier_soft + o.brier_soft,
            [a + b for a, b in zip(self.classes, o.classes, strict=True)],
            self.ace_conf + o.ace_conf,
            [a + b for a, b in zip(self.ace_correct, o.ace_correct, strict=True)],
        )


def _rater_sums(p: np.ndarray, lab: np.ndarray, correct: np.ndarray, conf: np.ndarray, idx: np.ndarray,
                fg_region: np.ndarray, class_idx: list[np.ndarray], class_region: list, nb: int) -> RaterSums:
    """One slab's :class:`RaterSums` for the rater labels ``lab`` ``(*spatial)``; ``correct`` (top label equals
    ``lab``), the top-label confidences, regions and bin indices come flat and precomputed."""
    k_all = p.shape[0]
    lab_flat = lab.ravel()
    classwise, classwise_fg, brier_class = [], [None], []
    for k in range(k_all):
        pk = p[k].ravel()
        yk = lab_flat == k
        classwise.append(cal.bin_sums(pk, yk, nb, index=class_idx[k]))
        if k > 0:
            m = class_region[k]
            classwise_fg.append(cal.bin_sums(pk[m], yk[m], nb, index=class_idx[k][m]))
        brier_class.append(float(np.sum((p[k].astype(np.float64) - (lab == k)) ** 2)))
    pk_lab = np.take_along_axis(p, lab.astype(np.int64)[None], axis=0)[0]
    return RaterSums(
        toplabel=cal.bin_sums(conf, correct, nb, index=idx),
        toplabel_fg=cal.bin_sums(conf[fg_region], correct[fg_region], nb, index=idx[fg_region]),
        classwise=classwise,
        classwise_fg=classwise_fg,
        brier=float(np.sum(np.sum((p - cal._as_soft(lab, p.shape)) ** 2, axis=0))),
        log_lik=float(np.sum(np.log(np.maximum(pk_lab, cal.NLL_EPS)))),
        brier_class=brier_class,
    )


def _class_counts(p: np.ndarray, seg: np.ndarray, raters: np.ndarray, k: int, soft_k: np.ndarray) -> ClassCounts:
    """One slab's :class:`ClassCounts` of foreground class ``k``."""
    n_raters = raters.shape[0]
    cons = consensus(raters, k)
    seg_k = seg == k
    votes = raters == k
    kept = seg_k & ~cons.dissensus
    mv = majority_vote(raters, k)
    pk = p[k]
    q = rater_fraction(raters, k)
    inter, po, ro = curvas2024_row_counts(kept, cons.foreground)
    return ClassCounts(
        consensus_fg=int(np.count_nonzero(cons.foreground)),
        dissensus=int(np.count_nonzero(cons.dissensus)),
        consensus_bg=int(np.count_nonzero(cons.background)),
        seg=int(np.count_nonzero(seg_k)),
        rater=np.count_nonzero(votes.reshape(n_raters, -1), axis=1).astype(np.int64),
        rater_inter=np.array([int(np.count_nonzero(seg_k & votes[r])) for r in range(n_raters)]),
        kept=int(np.count_nonzero(kept)),
        kept_inter=int(np.count_nonzero(kept & cons.foreground)),
        majority=int(np.count_nonzero(mv)),
        majority_inter=int(np.count_nonzero(seg_k & mv)),
        prob=float(pk.sum()),
        rater_frac=float(q.sum()),
        prob_frac=float(np.sum(pk * q)),
        prob_consensus_fg=float(pk[cons.foreground].sum()),
        prob_consensus_bg=float(pk[cons.background].sum()),
        brier_soft=float(np.sum((pk - soft_k) ** 2)),
        row_counts=([inter], [po], [ro]),
    )


def _slab_sums(p: np.ndarray, seg: np.ndarray, raters: np.ndarray, nb: int) -> CaseSums:
    """The :class:`CaseSums` of one slab: probabilities ``(K, *slab)``, segmentation and raters ``(R, *slab)``."""
    k_all = p.shape[0]
    conf, pred = cal.top_label(p)
    conf_flat, pred_flat = conf.ravel(), pred.ravel()
    c32 = conf_flat.astype(np.float32)
    idx = cal.bin_index(conf_flat, nb)
    fg_region = (pred_flat != 0) | (raters != 0).any(axis=0).ravel()
    class_idx = [cal.bin_index(p[k].ravel(), nb) for k in range(k_all)]
    class_region = [None] + [((pred_flat == k) | (raters == k).any(axis=0).ravel()) for k in range(1, k_all)]
    per_rater, packed = [], []
    for lab in raters:
        correct = pred_flat == lab.ravel()
        packed.append([np.packbits(correct)])  # 1 bit per voxel and rater until ACE is computed at the end
        per_rater.append(_rater_sums(p, lab, correct, conf_flat, idx, fg_region, class_idx, class_region, nb))
    soft = soft_labels(raters, k_all)
    return CaseSums(
        n_vox=int(seg.size),
        raters=per_rater,
        brier_soft=float(np.sum(np.sum((p - soft) ** 2, axis=0))),
        classes=[_class_counts(p, seg, raters, k, soft[k]) for k in range(1, k_all)],
        ace_conf=[c32 if np.array_equal(c32, conf_flat) else conf_flat.copy()],
        ace_correct=packed,
    )


# -- compute: rows from the state -----------------------------------------------------------------------------------


def _ace_from_parts(conf_parts: list[np.ndarray], correct_parts: list[list[np.ndarray]], n_bins: int) -> list[float]:
    """:func:`calibration.ace` per rater from the per-slab top-label confidences (voxel order) and packed
    correctness bits, without sorting the whole case.

    Equal-mass group ``g`` holds sorted ranks ``[start_g, start_g+1)`` of the stable sort. Its first value ``v_g``
    comes from one ``np.partition`` of a copy of the confidences (no ``int64`` sort order: ~half the memory of an
    argsort); then each slab assigns its voxels to groups: a value that is no group's first value lies inside the
    group of the largest ``v_g`` below it; a value equal to some ``v_g`` (ties can span several groups, e.g. many
    confidences of exactly 1) gets its stable-sort rank from the count of smaller values plus its occurrence
    number among equal values in voxel order. Group sums of correctness are integer counts (exact); confidence
    sums are float64 (equal to the sorted-order sums up to rounding).
    Peak memory: the confidences (4 or 8 bytes a voxel) twice while partitioning, plus 1 bit per voxel and rater.
    """
    if not conf_parts:
        return [float("nan")] * len(correct_parts)
    dtype = np.float64 if any(c.dtype == np.float64 for c in conf_parts) else np.float32
    n = int(sum(c.size for c in conf_parts))
    if n == 0:
        return [float("nan")] * len(correct_parts)
    b = min(n_bins, n)
    base, extra = divmod(n, b)
    sizes = np.full(b, base, dtype=np.int64)
    sizes[:extra] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    work = np.empty(n, dtype=dtype)
    pos = 0
    for c in conf_parts:
        work[pos : pos + c.size] = c
        pos += c.size
    work.partition(starts)
    firsts = work[starts].copy()  # v_g, nondecreasing
    del work
    uv = np.unique(firsts)
    # values below each distinct first value (one pass over the slabs)
    n_le = np.zeros(uv.size + 1, dtype=np.int64)  # n_le[m]: values with exactly m first values <= them
    for c in conf_parts:
        n_le += np.bincount(np.searchsorted(uv, c, side="right"), minlength=uv.size + 1)
    lt = np.cumsum(n_le)[: uv.size]  # values < uv[j]: those with at most j first values <= them
    seen = np.zeros(uv.size, dtype=np.int64)  # ties at uv[j] met so far, in voxel order
    cs = np.zeros(b, dtype=np.float64)
    counts = np.zeros((len(correct_parts), b), dtype=np.int64)
    for i, c in enumerate(conf_parts):
        j = np.searchsorted(uv, c, side="left")
        tie = j < uv.size
        tie[tie] = uv[j[tie]] == c[tie]
        group = np.searchsorted(firsts, c, side="left") - 1
        t_idx = np.flatnonzero(tie)
        if t_idx.size:
            keys = j[t_idx]
            order = np.argsort(keys, kind="stable")  # voxel order within each tied value
            k_sorted = keys[order]
            run_start = np.searchsorted(k_sorted, k_sorted, side="left")
            occurrence = np.empty(t_idx.size, dtype=np.int64)
            occurrence[order] = np.arange(t_idx.size) - run_start
            rank = lt[keys] + seen[keys] + occurrence
            group[t_idx] = np.searchsorted(starts, rank, side="right") - 1
            seen += np.bincount(keys, minlength=uv.size)
        cs += np.bincount(group, weights=c.astype(np.float64), minlength=b)
        for r, parts in enumerate(correct_parts):
            ok = np.unpackbits(parts[i], count=c.size).astype(bool)
            counts[r] += np.bincount(group[ok], minlength=b)
    conf_parts.clear()
    for parts in correct_parts:
        parts.clear()
    return [float(np.sum(np.abs(counts[r] - cs)) / n) for r in range(len(correct_parts))]


@dataclass
class RaterCalibration:
    """The ECE family of one case against one rater, from its bins: top-label ECE / MCE, foreground-region ECE,
    and per class ``(K,)`` the class-wise ECE and MCE and the class-region ECE (NaN for the background)."""

    ece: float
    ece_fg: float
    mce: float
    class_ece: np.ndarray
    class_mce: np.ndarray
    class_fg_ece: np.ndarray


def rater_calibration(rs: RaterSums) -> RaterCalibration:
    """:class:`RaterCalibration` of one rater's :class:`RaterSums`."""
    return RaterCalibration(
        ece=rs.toplabel.ece(),
        ece_fg=rs.toplabel_fg.ece(),
        mce=rs.toplabel.mce(),
        class_ece=np.array([b.ece() for b in rs.classwise], dtype=np.float64),
        class_mce=np.array([b.mce() for b in rs.classwise], dtype=np.float64),
        class_fg_ece=np.array([np.nan if b is None else b.ece() for b in rs.classwise_fg], dtype=np.float64),
    )


def _bin_rows(method: str, case_id: str, bs: cal.BinSums, rater: int, variant: str, cls: str, k: int) -> list[dict]:
    lower, upper = bs.edges()
    return [
        {
            "method": method,
            "case": case_id,
            "rater": rater,
            "variant": variant,
            "class": cls,
            "class_index": k,
            "bin": i,
            "lower": float(lower[i]),
            "upper": float(upper[i]),
            "count": float(bs.count[i]),
            "sum_confidence": float(bs.conf[i]),
            "sum_accuracy": float(bs.acc[i]),
        }
        for i in range(len(bs.count))
    ]


def case_bin_rows(method: str, case_id: str, class_names: Sequence[str], state: CaseSums) -> list[dict]:
    """The per-bin rows of one case (``metrics.bins.csv``): per rater the top-label, foreground top-label, and per
    class the class-wise and (foreground classes) class-region bins."""
    out: list[dict] = []
    for r, rs in enumerate(state.raters):
        out += _bin_rows(method, case_id, rs.toplabel, r, "toplabel", "all", -1)
        out += _bin_rows(method, case_id, rs.toplabel_fg, r, "toplabel_fg", "all", -1)
        for k, name in enumerate(class_names):
            out += _bin_rows(method, case_id, rs.classwise[k], r, "class", name, k)
            if k > 0:
                out += _bin_rows(method, case_id, rs.classwise_fg[k], r, "class_fg", name, k)  # type: ignore[arg-type]
    return out


def _per_voxel(total: float, n_vox: int) -> float:
    return total / n_vox if n_vox else float("nan")


def all_row(state: CaseSums, cals: list[RaterCalibration], ace_r: list[float]) -> dict:
    """The metrics of the row ``class = "all"``, averaged over raters (top-label calibration, Brier, NLL)."""
    n = state.n_vox
    return {
        "class": "all",
        "class_index": -1,
        "n_raters": len(state.raters),
        "ece": _nanmean([c.ece for c in cals]),
        "ece_fg": _nanmean([c.ece_fg for c in cals]),
        "mce": _nanmean([c.mce for c in cals]),
        "ace": _nanmean(ace_r),
        "ece_classwise": float(np.mean(np.array([c.class_ece for c in cals]))),
        "brier": float(np.mean([float(_per_voxel(rs.brier, n)) for rs in state.raters])),
        "brier_soft": float(_per_voxel(state.brier_soft, n)),
        # NLL is linear in the target: its mean over raters equals the NLL against the mean rater label
        "nll": float(np.mean([float(-_per_voxel(rs.log_lik, n)) for rs in state.raters])),
    }


def challenge_confidence_from_counts(cc: ClassCounts) -> float:
    """:func:`multirater.challenge_confidence` from the sums of :class:`ClassCounts` (NaN without consensus
    foreground or background)."""
    if cc.consensus_fg == 0 or cc.consensus_bg == 0:
        return float("nan")
    return ((1.0 - float(cc.prob_consensus_bg / cc.consensus_bg)) + float(cc.prob_consensus_fg / cc.consensus_fg)) / 2.0


def class_row(cc: ClassCounts, k: int, name: str, state: CaseSums, cals: list[RaterCalibration],
              voxel_ml: float, crps_modes: Sequence[str], sample_volumes: np.ndarray | None) -> dict:
    """The metrics of foreground class ``k``: consensus regions, the Dice variants, the CURVAS confidence, the
    class-wise calibration averaged over raters, volumes and the volume CRPS."""
    n_raters = len(state.raters)
    n_union = cc.consensus_fg + cc.dissensus
    per_rater = [dice_from_counts(int(cc.rater_inter[r]), cc.seg, int(cc.rater[r])) for r in range(n_raters)]
    vols = cc.rater.astype(np.float64) * voxel_ml
    mu, sigma = crps_mod.fit_gaussian(vols)
    v_pred = float(cc.prob) * voxel_ml
    row = {
        "class": name,
        "class_index": k,
        "n_raters": n_raters,
        "consensus_voxels": cc.consensus_fg,
        "dissensus_voxels": cc.dissensus,
        "union_voxels": n_union,
        "consensus_ratio": (cc.consensus_fg / n_union) if n_union else float("nan"),
        "dissensus_fraction": 0.0 if n_union == 0 else cc.dissensus / n_union,
        "dice_consensus": dice_from_counts(cc.kept_inter, cc.kept, cc.consensus_fg),
        "dice_consensus_curvas": curvas2024_dice_from_row_counts(
            *(np.concatenate(x) if x else np.zeros((0, 0)) for x in cc.row_counts)
        ),
        "dice_rater_mean": float(np.mean(per_rater)),
        "dice_rater_min": float(np.min(per_rater)),
        "dice_rater_max": float(np.max(per_rater)),
        "dice_majority": dice_from_counts(cc.majority_inter, cc.seg, cc.majority),
        "soft_dice_mean_rater": dice_from_counts(float(cc.prob_frac), cc.prob, cc.rater_frac),
        "confidence": challenge_confidence_from_counts(cc),
        "ece_class": float(np.mean([c.class_ece[k] for c in cals])),
        "ece_class_fg": _nanmean([c.class_fg_ece[k] for c in cals]),
        "mce_class": _nanmean([c.class_mce[k] for c in cals]),
        "brier_class": float(np.mean([_per_voxel(rs.brier_class[k], state.n_vox) for rs in state.raters])),
        "brier_class_soft": float(_per_voxel(cc.brier_soft, state.n_vox)),
        "volume_pred_ml": v_pred,
        "volume_seg_ml": float(cc.seg) * voxel_ml,
        "volume_rater_mean_ml": mu,
        "volume_rater_std_ml": sigma,
    }
    for mode in crps_modes:
        if mode == "gaussian":
            row[crps_column(mode)] = crps_mod.crps_gaussian(v_pred, mu, sigma)
        elif mode == "curvas":
            row[crps_column(mode)] = crps_mod.crps_curvas(v_pred, mu, sigma)
        else:
            row[crps_column(mode)] = crps_mod.crps_ensemble(vols, sample_volumes[:, k])  # type: ignore[index]
    return row


def _finish(inp: CaseInput, class_names: Sequence[str], opts: EvalOptions, state: CaseSums, voxel_ml: float,
            sample_volumes: np.ndarray | None) -> tuple[list[dict], list[dict]]:
    """``(rows, bin_rows)`` of one case from its accumulated :class:`CaseSums`."""
    base = {"case": inp.case_id, "method": inp.method}
    bins_out = case_bin_rows(inp.method, inp.case_id, class_names, state)
    ace_r = _ace_from_parts(state.ace_conf, state.ace_correct, opts.n_bins)
    cals = [rater_calibration(rs) for rs in state.raters]
    rows = [
        {**base, **class_row(cc, k, class_names[k], state, cals, voxel_ml, opts.crps_modes, sample_volumes)}
        for k, cc in enumerate(state.classes, start=1)
    ]
    rows.append({**base, **all_row(state, cals, ace_r)})
    return rows, bins_out


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


#: the columns :func:`pooled_calibration` groups the bins by, and the sums it adds up
POOL_KEYS = ["method", "variant", "class", "class_index", "rater", "bin"]
POOL_SUMS = ["count", "sum_confidence", "sum_accuracy"]


class PooledBins:
    """The per-bin sums of many cases, added case by case, without keeping the cases' rows (memory grows with the
    number of distinct bins, not of cases).

    :meth:`frame` is one row per (method, variant, class, class_index, rater, bin) with the sums over every row
    added so far, bit for bit what ``bins.groupby(POOL_KEYS)[POOL_SUMS].sum()`` gives on the concatenated rows in
    the order they were added: pandas adds float64 groups with Kahan's compensated summation, skipping NaN (each
    compensation that turns NaN, from an infinity, is reset to 0), and so does :meth:`add`. So
    ``pooled_calibration(pool.frame())`` equals ``pooled_calibration(all_rows)``.
    """

    def __init__(self) -> None:
        self._index: dict[tuple, int] = {}
        self._keys: list[tuple] = []
        self._sum = np.zeros((0, len(POOL_SUMS)), dtype=np.float64)
        self._comp = np.zeros((0, len(POOL_SUMS)), dtype=np.float64)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, rows: Sequence[dict]) -> None:
        """Add one batch of bin rows (dicts with the ``BIN_COLUMNS``, e.g. one case's)."""
        if not rows:
            return
        idx = np.empty(len(rows), dtype=np.intp)
        vals = np.empty((len(rows), len(POOL_SUMS)), dtype=np.float64)
        for i, d in enumerate(rows):
            key = tuple(d[c] for c in POOL_KEYS)
            j = self._index.get(key)
            if j is None:
                j = self._index[key] = len(self._keys)
                self._keys.append(key)
            idx[i] = j
            vals[i] = [d[c] for c in POOL_SUMS]
        if len(self._keys) > len(self._sum):
            grow = np.zeros((max(len(self._keys), 2 * len(self._sum)) - len(self._sum), len(POOL_SUMS)))
            self._sum = np.concatenate([self._sum, grow])
            self._comp = np.concatenate([self._comp, grow])
        if len(np.unique(idx)) == len(idx):
            self._step(idx, vals)
        else:  # a key twice in one batch: the rows one after the other, in order
            for i in range(len(idx)):
                self._step(idx[i : i + 1], vals[i : i + 1])

    def _step(self, idx: np.ndarray, val: np.ndarray) -> None:
        s, c = self._sum[idx], self._comp[idx]
        with np.errstate(invalid="ignore"):  # inf - inf: the NaN compensation pandas resets too
            y = val - c
            t = s + y
            comp = (t - s) - y
        comp[comp != comp] = 0.0
        ok = ~np.isnan(val)
        self._sum[idx] = np.where(ok, t, s)
        self._comp[idx] = np.where(ok, comp, c)

    def frame(self) -> pd.DataFrame:
        """The pooled bins: columns ``POOL_KEYS + POOL_SUMS``, one row per distinct bin (empty when nothing was
        added)."""
        df = pd.DataFrame(self._keys, columns=POOL_KEYS) if self._keys else pd.DataFrame(columns=POOL_KEYS)
        for j, c in enumerate(POOL_SUMS):
            df[c] = self._sum[: len(self._keys), j]
        return df


def pooled_calibration(bins: pd.DataFrame) -> pd.DataFrame:
    """Dataset-level calibration from per-bin sums (any number of cases and shards, concatenated).

    Sums the bins over cases per (method, variant, class, rater), computes ECE (and MCE for the plain variants)
    per rater and averages over raters. Returns columns ``method, class, metric, pooled``; metric names as in
    ``metrics.csv`` (``ece``, ``mce``, ``ece_fg``, ``ece_class``, ``mce_class``, ``ece_class_fg``) plus
    ``ece_classwise`` (mean of the pooled class-wise ECE over all classes, background included).
    """
    if bins.empty:
        return pd.DataFrame(columns=["method", "class", "metric", "pooled"])
    g = bins.groupby(["method", "variant", "class", "class_index", "rater", "bin"], sort=True)[
        ["count", "sum_confidence", "sum_accuracy"]
    ].sum()
    out = []
    for (method, variant, cls, k), sub in g.groupby(level=["method", "variant", "class", "class_index"]):
        eces, mces = [], []
        for _, rb in sub.groupby(level="rater"):
            bs = cal.BinSums(
                rb["count"].to_numpy(), rb["sum_confidence"].to_numpy(), rb["sum_accuracy"].to_numpy()
            )
            eces.append(bs.ece())
            mces.append(bs.mce())
        ece_name, mce_name = VARIANTS[variant]
        out.append({"method": method, "class": cls, "class_index": k, "metric": ece_name, "pooled": _nanmean(eces)})
        if mce_name:
            out.append({"method": method, "class": cls, "class_index": k, "metric": mce_name, "pooled": _nanmean(mces)})
    df = pd.DataFrame(out)
    cw = (
        df[df["metric"] == "ece_class"]
        .groupby("method")["pooled"]
        .mean()
        .rename("pooled")
        .reset_index()
        .assign(**{"class": "all", "class_index": -1, "metric": "ece_classwise"})
    )
    # class-wise variants of the background are part of ece_classwise only, not a reported class row
    df = df[~((df["metric"].isin(["ece_class", "mce_class"])) & (df["class_index"] == 0))]
    return pd.concat([df, cw], ignore_index=True)[["method", "class", "metric", "pooled"]]


def summarize(rows: pd.DataFrame, bins: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean, std (ddof 1), median and count over cases per method, class and metric; plus the pooled
    dataset-level value for the calibration metrics when ``bins`` are given.

    Columns: ``method, class, metric, n, mean, std, median, pooled``.
    """
    skip = {"case", "method", "class", "class_index"}
    metrics = [c for c in rows.columns if c not in skip]
    long = rows.melt(id_vars=["method", "class"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    long["value"] = long["value"].astype(float)
    order = {m: i for i, m in enumerate(metrics)}
    summ = (
        long.groupby(["method", "class", "metric"], sort=False)["value"]
        .agg(n="count", mean="mean", std="std", median="median")
        .reset_index()
    )
    if bins is not None and not bins.empty:
        summ = summ.merge(pooled_calibration(bins), on=["method", "class", "metric"], how="left")
    else:
        summ["pooled"] = np.nan
    class_order = {c: i for i, c in enumerate(dict.fromkeys(rows["class"]))}
    summ = summ.sort_values(
        ["method", "class", "metric"],
        key=lambda s: s.map(class_order) if s.name == "class" else (s.map(order) if s.name == "metric" else s),
    )
    return summ.reset_index(drop=True)[["method", "class", "metric", "n", "mean", "std", "median", "pooled"]]


def summary_json(summary: pd.DataFrame) -> dict:
    """``{method: {class: {metric: {n, mean, std, median[, pooled]}}}}`` with NaN as null."""
    out: dict = {}
    for rec in summary.to_dict("records"):
        d = {k: _json_num(rec[k]) for k in ("n", "mean", "std", "median")}
        if rec.get("pooled") is not None and np.isfinite(rec["pooled"]):
            d["pooled"] = float(rec["pooled"])
        out.setdefault(rec["method"], {}).setdefault(rec["class"], {})[rec["metric"]] = d
    return out


def _json_num(v: object) -> float | int | None:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    if not np.isfinite(f):
        return None
    return int(f) if isinstance(v, (int, np.integer)) else f
