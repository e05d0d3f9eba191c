"""Figures for `uqseg explain`: Grad-CAM and uncertainty overlays, 3D montages, predicted-vs-true scatter,
reliability diagrams, UMAP scatter.

Matplotlib's object API with the Agg canvas only (no pyplot, no global backend switch, no display needed).
Each ``*_figure`` function builds and returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes
it as PNG (and optionally PDF) atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uqseg_cli.explain.gradcam import normalize_map, top_slices
from uqseg_cli.io.atomic import atomic_write
from uqseg_cli.metrics.regression import pearson, r2_score

FORMATS = ("png", "pdf")
SEG_COLOR = "#00ff66"
REF_COLOR = "#ffd400"


def new_figure(width: float, height: float) -> Figure:
    """A Figure with an Agg canvas attached (sizes in inches, 100 dpi when saved as PNG)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format (via a temporary name and ``os.replace``).

    Returns the written paths. Formats: ``png``, ``pdf``.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; expected one of {FORMATS}")
        path = stem.with_name(f"{stem.name}.{fmt}")
        written.append(atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, bbox_inches="tight")))
    return written


# ----------------------------------------------------------------------------------------------- images


def display_image(image: np.ndarray) -> np.ndarray:
    """A 2-D image ``(C, H, W)`` as an RGB array ``(H, W, 3)`` in [0, 1] for display.

    3 channels: uint8 is divided by 255, other dtypes are min-max scaled. 1 channel (or any other count: the
    first channel) becomes grey, scaled between its 1st and 99th percentile (a CT window that ignores air
    and metal outliers).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {image.shape}")
    if image.shape[0] == 3:
        rgb = np.moveaxis(image, 0, -1).astype(np.float64)
        if image.dtype == np.uint8:
            return rgb / 255.0
        lo, hi = float(rgb.min()), float(rgb.max())
        return (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
    g = image[0].astype(np.float64)
    lo, hi = np.percentile(g, [1, 99]) if g.size else (0.0, 0.0)
    if hi <= lo:
        lo, hi = float(g.min()), float(g.max())
    g = np.clip((g - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(g)
    return np.repeat(g[..., None], 3, axis=-1)


def _draw_contour(ax, mask: np.ndarray | None, color: str) -> None:
    if mask is None:
        return
    m = np.asarray(mask) > 0
    if m.any() and not m.all():
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2)


def _panel(ax, rgb, heat=None, seg=None, ref=None, title="", cmap="jet", vmax=1.0):
    ax.imshow(rgb, interpolation="nearest")
    im = None
    if heat is not None:
        # opacity grows with the value: where the map is 0 the image shows through unchanged
        alpha = np.clip(np.asarray(heat, dtype=np.float32) / (vmax or 1.0), 0.0, 1.0) * 0.75
        im = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=vmax, interpolation="bilinear")
    _draw_contour(ax, ref, REF_COLOR)
    _draw_contour(ax, seg, SEG_COLOR)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return im


def _contour_legend(fig, seg, ref) -> None:
    """A legend for the contour colours (segmentation green, reference yellow) below the panels."""
    from matplotlib.lines import Line2D

    handles = []
    if seg is not None:
        handles.append(Line2D([], [], color=SEG_COLOR, linewidth=2, label="segmentation (predicted)"))
    if ref is not None:
        handles.append(Line2D([], [], color=REF_COLOR, linewidth=2, label="reference (ground truth)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.02))


def uncertainty_scale(measure: str, num_classes: int, maps: Sequence[np.ndarray] = ()) -> dict:
    """One fixed colour scale per measure, so that every case's overlay reads the same.

    Entropy, expected entropy and mutual information are in nats and bounded by ln K (K classes): the scale is
    0 … ln K. ``confidence`` is shown as 1 − confidence (1 − the top class probability), bounded by 1 − 1/K.
    EPKL has no upper bound: its scale is the 99th percentile of the shown maps together (stated on the bar).
    Returns ``{"vmax", "label", "units"}``.
    """
    k = max(int(num_classes), 2)
    ln_k = math.log(k)
    if measure in ("entropy", "expected_entropy", "mutual_information"):
        return {"vmax": ln_k, "label": measure.replace("_", " "), "units": f"nats, 0 … ln {k} = {ln_k:.3f}"}
    if measure == "confidence":
        top = 1.0 - 1.0 / k
        return {"vmax": top, "label": "1 − confidence", "units": f"1 − top-class probability, 0 … {top:.3f}"}
    vals = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in maps]) if len(maps) else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    top = float(np.percentile(vals, 99)) if vals.size else 1.0
    top = top if top > 0 else (float(vals.max()) if vals.size and vals.max() > 0 else 1.0)
    unit = "nats, " if measure == "epkl" else ""
    return {"vmax": top, "label": measure.replace("_", " "),
            "units": f"{unit}0 … {top:.3g} (99th percentile of the cases shown)"}


def overlay_figure(
    image: np.ndarray,
    heat: np.ndarray,
    seg: np.ndarray | None = None,
    ref: np.ndarray | None = None,
    title: str = "",
    heat_label: str = "Grad-CAM",
    normalize: bool = True,
    vmax: float | None = None,
    heat_units: str = "",
) -> Figure:
    """Two panels for a 2-D case: the image with contours, and the heat map over the image.

    image ``(C, H, W)``; heat ``(H, W)`` >= 0 (scaled to [0, 1] by its maximum when ``normalize``, else drawn
    on 0 … ``vmax``, a fixed scale, or its own maximum when None); seg, ref ``(H, W)`` label maps drawn as
    contours (segmentation green, reference yellow, with a legend); ``heat_units`` labels the colour bar.
    """
    rgb = display_image(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the image {rgb.shape[:2]}")
    if normalize:
        heat, vmax = normalize_map(heat), 1.0
    elif vmax is None:
        vmax = float(heat.max()) or 1.0
    h, w = rgb.shape[:2]
    fig = new_figure(8.0, 4.0 * h / max(w, 1) + 0.9)
    ax0, ax1 = fig.subplots(1, 2)
    _panel(ax0, rgb, seg=seg, ref=ref, title="image, segmentation" + (", reference" if ref is not None else ""))
    im = _panel(ax1, rgb, heat, seg=seg, ref=ref, title=heat_label, vmax=vmax,
                cmap="jet" if normalize else "plasma")
    cb = fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.02)
    if heat_units:
        cb.set_label(heat_units, fontsize=7)
    cb.ax.tick_params(labelsize=7)
    _contour_legend(fig, seg, ref)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def montage_figure(
    image: np.ndarray,
    heat: np.ndarray,
    seg: np.ndarray | None = None,
    ref: np.ndarray | None = None,
    num_slices: int = 9,
    title: str = "",
    heat_label: str = "Grad-CAM",
    normalize: bool = True,
    vmax: float | None = None,
    heat_units: str = "",
) -> tuple[Figure, np.ndarray]:
    """Montage of the axial slices with the most heat-map mass for a 3-D case.

    image ``(C, D, H, W)``; heat ``(D, H, W)`` >= 0 (one colour scale for all slices: the volume maximum);
    seg, ref ``(D, H, W)``. Returns the figure and the chosen slice indices (ascending).
    """
    image = np.asarray(image)
    heat = np.asarray(heat, dtype=np.float32)
    if image.ndim != 4 or heat.shape != image.shape[1:]:
        raise ValueError(f"expected image (C, D, H, W) and heat (D, H, W), got {image.shape} and {heat.shape}")
    slices = top_slices(heat, num_slices)
    if normalize:
        heat, vmax = normalize_map(heat), 1.0
    elif vmax is None:
        vmax = float(heat.max()) or 1.0
    cols = int(math.ceil(math.sqrt(len(slices))))
    rows = int(math.ceil(len(slices) / cols))
    h, w = heat.shape[1:]
    fig = new_figure(2.6 * cols, 2.6 * rows * h / max(w, 1) + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    im = None
    for ax, z in zip(axes, slices, strict=False):
        im = _panel(
            ax,
            display_image(image[:, z]),
            heat[z],
            seg=None if seg is None else seg[z],
            ref=None if ref is None else ref[z],
            title=f"slice {z}",
            vmax=vmax,
            cmap="jet" if normalize else "plasma",
        )
    for ax in axes[len(slices) :]:
        ax.set_axis_off()
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02)
        if heat_units:
            cb.set_label(heat_units, fontsize=7)
    _contour_legend(fig, seg, ref)
    fig.suptitle(f"{title}  ({heat_label}, {len(slices)} most relevant slices)".strip(), fontsize=10)
    return fig, slices


def heat_figure(
    image: np.ndarray,
    heat: np.ndarray,
    seg: np.ndarray | None = None,
    ref: np.ndarray | None = None,
    title: str = "",
    heat_label: str = "Grad-CAM",
    num_slices: int = 9,
    normalize: bool = True,
    vmax: float | None = None,
    heat_units: str = "",
) -> Figure:
    """:func:`overlay_figure` for 2-D ``(C, H, W)`` images, :func:`montage_figure` for 3-D ``(C, D, H, W)``."""
    if np.ndim(image) == 4:
        return montage_figure(image, heat, seg, ref, num_slices=num_slices, title=title, heat_label=heat_label,
                              normalize=normalize, vmax=vmax, heat_units=heat_units)[0]
    return overlay_figure(image, heat, seg, ref, title=title, heat_label=heat_label, normalize=normalize,
                          vmax=vmax, heat_units=heat_units)


# ----------------------------------------------------------------------------------------------- charts


def pred_vs_true_figure(
    y_true: np.ndarray, y_pred: np.ndarray, label: str = "Dice", title: str = ""
) -> tuple[Figure, dict[str, float]]:
    """Scatter of predicted against true quality with the identity line; R² and Pearson r in the title.

    R² is ``1 - SS_res / SS_tot`` of the predictions as estimates of the truth (not of a fitted line).
    Returns the figure and ``{"n", "r2", "pearson"}``.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    stats = {"n": int(t.size), "r2": r2_score(t, p), "pearson": pearson(t, p)}
    fig = new_figure(4.6, 4.6)
    ax = fig.subplots()
    ax.scatter(t, p, s=18, alpha=0.8, edgecolors="none")
    lo = float(min(t.min(initial=0.0), p.min(initial=0.0), 0.0))
    hi = float(max(t.max(initial=1.0), p.max(initial=1.0), 1.0))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="identity")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.legend(loc="upper left", fontsize=8)
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}R² = {stats['r2']:.3f}, Pearson r = {stats['pearson']:.3f} (n = {stats['n']})", fontsize=9)
    return fig, stats


def reliability_from_sums(count, conf_sum, acc_sum) -> dict[str, np.ndarray | float]:
    """Per-bin mean confidence and accuracy, and ECE/MCE, from per-bin sums (equal-width bins).

    count, conf_sum, acc_sum: ``(B,)``. Returns ``confidence`` and ``accuracy`` ``(B,)`` (nan for empty bins),
    ``weight`` ``(B,)`` = count / total, ``ece`` = ``Σ_b |acc_sum_b - conf_sum_b| / total`` and ``mce`` = max gap
    over non-empty bins.
    """
    n = np.asarray(count, dtype=np.float64)
    c = np.asarray(conf_sum, dtype=np.float64)
    a = np.asarray(acc_sum, dtype=np.float64)
    total = float(n.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(n > 0, c / n, np.nan)
        acc = np.where(n > 0, a / n, np.nan)
    gaps = np.abs(acc - conf)
    return {
        "confidence": conf,
        "accuracy": acc,
        "weight": n / total if total > 0 else np.zeros_like(n),
        "ece": float(np.abs(a - c).sum() / total) if total > 0 else math.nan,
        "mce": float(np.nanmax(gaps)) if np.any(n > 0) else math.nan,
    }


def merge_degenerate_bins(lower, upper, *sums):
    """Fold zero-width bins (``lower == upper``, e.g. `evaluate`'s extra ``confidence == 1`` bin) into the bin
    that ends at that value, for drawing. Returns ``(lower, upper, *sums)`` of the remaining bins."""
    lo = np.asarray(lower, dtype=np.float64)
    up = np.asarray(upper, dtype=np.float64)
    arrs = [np.asarray(a, dtype=np.float64).copy() for a in sums]
    keep = up > lo
    for i in np.flatnonzero(~keep):
        target = np.flatnonzero(keep & np.isclose(up, lo[i]))
        if target.size:
            for a in arrs:
                a[target[0]] += a[i]
    return (lo[keep], up[keep], *[a[keep] for a in arrs])


def reliability_figure(
    count, conf_sum, acc_sum, lower=None, upper=None, ece: float | None = None, title: str = ""
) -> tuple[Figure, dict]:
    """Reliability diagram from per-bin sums.

    Bins are ``[lower_b, upper_b]`` (default: ``B`` equal-width bins on [0, 1]); zero-width bins are folded
    into their neighbour for drawing only (:func:`merge_degenerate_bins`). Bars: accuracy per bin; red: the gap
    to the mean confidence; lower panel: share of voxels per bin. The title shows ``ece`` when given (e.g.
    `evaluate`'s mean over raters), otherwise the ECE of the sums as given. Returns the figure and the
    :func:`reliability_from_sums` result of the bins as given.
    """
    r = reliability_from_sums(count, conf_sum, acc_sum)
    b = len(r["confidence"])
    if lower is None or upper is None:
        edges = np.linspace(0.0, 1.0, b + 1)
        lower, upper = edges[:-1], edges[1:]
    lo, up, n, c, a = merge_degenerate_bins(lower, upper, count, conf_sum, acc_sum)
    d = reliability_from_sums(n, c, a)
    centers = (lo + up) / 2
    width = up - lo
    fig = new_figure(4.6, 5.4)
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    acc = np.nan_to_num(d["accuracy"], nan=0.0)
    conf = np.nan_to_num(d["confidence"], nan=0.0)
    ax.bar(centers, acc, width=width, edgecolor="black", linewidth=0.5, label="accuracy")
    ax.bar(centers, conf - acc, bottom=acc, width=width, color="red", alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    head = f"{title}\n" if title else ""
    shown = r["ece"] if ece is None else float(ece)
    ax.set_title(f"{head}ECE = {shown:.4f}, MCE = {r['mce']:.4f}", fontsize=9)
    axh.bar(centers, d["weight"], width=width, color="grey", edgecolor="black", linewidth=0.5)
    axh.set_xlabel("confidence")
    axh.set_ylabel("share")
    return fig, r


def umap_figure(
    xy: np.ndarray, color: np.ndarray | None, color_label: str, title: str = "", labels: Sequence[str] = ()
) -> Figure:
    """Scatter of 2-D embedding coordinates ``(n, 2)`` coloured by ``color`` ``(n,)`` (e.g. Dice, viridis).

    ``labels`` (case ids) are written next to the points when there are at most 40 of them.
    """
    xy = np.asarray(xy, dtype=np.float64)
    fig = new_figure(5.2, 4.4)
    ax = fig.subplots()
    if color is not None and np.isfinite(np.asarray(color, dtype=np.float64)).any():
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(color, dtype=np.float64), cmap="viridis", s=26)
        fig.colorbar(sc, ax=ax, label=color_label)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=26)
    if 0 < len(labels) <= 40:
        for (x, y), lab in zip(xy, labels, strict=False):
            ax.annotate(str(lab), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title, fontsize=9)
    return fig
