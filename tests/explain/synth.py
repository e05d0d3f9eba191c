"""Tiny synthetic inputs for the explain tests: one self-contained ``uncertainty``-stage file (no parents), a quality
checkpoint with a tiny timm backbone, a scores table and `evaluate`-style per-bin sums."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from uqseg_cli.io.store import write_array, write_root
from uqseg_cli.quality.checkpoint import save_quality_model
from uqseg_cli.quality.inputs import channel_names
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import create_quality_model


def _disc(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def write_uncertainty(path: Path, n: int = 6, shape=(40, 48), seed: int = 0, method: str = "tta") -> dict:
    """An ``uncertainty.h5`` whose cases hold everything explain reads (image, probabilities, segmentation,
    reference, ``<method>/<measure>`` maps). Segmentations are shifted references, so Dice varies."""
    rng = np.random.default_rng(seed)
    ids = [f"case{i:02d}" for i in range(n)]
    truth = {}
    with h5py.File(path, "w") as f:
        write_root(
            f, stage="uncertainty", config={"methods": [method], "class_names": ["background", "lesion"]},
            parent="", parent_fp="", case_ids=ids, num_parts=1, part_id=0, done_ids=ids,
        )
        for i, cid in enumerate(ids):
            centre = np.array(shape) / 2
            radius = min(shape) * 0.25
            ref = _disc(shape, centre, radius)
            shift = np.zeros(len(shape))
            shift[-1] = i * radius / n
            seg = _disc(shape, centre + shift, radius)
            wrong = (seg != ref).astype(np.float32)
            ent = np.clip(0.6 * wrong + 0.05 * rng.random(shape), 0, np.log(2)).astype(np.float32)
            g = f.create_group(f"cases/{cid}")
            img = np.stack([seg * 120 + rng.integers(0, 60, shape)] * 3).astype(np.uint8)
            write_array(g, "image", img)
            p1 = np.clip(seg * 0.8 + 0.1 + 0.05 * rng.random(shape), 0, 1).astype(np.float32)
            write_array(g, "probabilities", np.stack([1 - p1, p1]).astype(np.float16))
            write_array(g, "segmentation", seg.astype(np.uint8))
            write_array(g, "reference", ref.astype(np.uint8))
            m = g.create_group(method)
            write_array(m, "entropy", ent)
            write_array(m, "confidence", 1 - ent / 2)
            g.attrs["spacing"] = [1.0] * len(shape)
            g.attrs["complete"] = True
            inter = np.count_nonzero(seg & ref)
            truth[cid] = 2 * inter / (seg.sum() + ref.sum())
    return truth


def write_quality_model(path: Path, dims: int = 2, size: int = 64, seed: int = 0) -> QualityMeta:
    """A ``quality.pt`` (framework img-seg-unc, tiny timm ResNet or the small 3D CNN) with random weights."""
    torch.manual_seed(seed)
    meta = QualityMeta(
        framework="img-seg-unc",
        method="tta",
        measures=["entropy"],
        target="dice",
        backbone="test_resnet",
        dims=dims,
        input_size=[size] * dims,
        channels=channel_names("img-seg-unc", 3, 2, ["entropy"]),
        dropout=0.0,
        channel_mean=[60.0, 60.0, 60.0, 0.3, 0.1],
        channel_std=[40.0, 40.0, 40.0, 0.45, 0.2],
    )
    model = create_quality_model(meta).eval()
    save_quality_model(path, meta, model)
    return meta


def write_scores(path: Path, truth: dict, noise: float = 0.05, seed: int = 1) -> pd.DataFrame:
    """`uqseg score`'s columns; two frameworks per case (img-seg-unc, and a features model predicting 0.5)."""
    rng = np.random.default_rng(seed)
    ids = sorted(truth)
    t = np.array([truth[c] for c in ids])
    cnn = pd.DataFrame(
        {"case": ids, "method": "tta", "measure": "entropy", "framework": "img-seg-unc",
         "predicted_dice": t + rng.normal(0, noise, len(t)), "true_dice": t, "split": "oof", "train_case": False}
    )
    feats = cnn.assign(framework="features", predicted_dice=0.5)
    df = pd.concat([cnn, feats], ignore_index=True)
    df.to_csv(path, index=False)
    return df


def write_bins(path: Path, n_cases: int = 3, n_bins: int = 10, raters: int = 2, seed: int = 2) -> pd.DataFrame:
    """`evaluate`-style per-bin sums (top-label variant, class "all"), with the extra ``confidence == 1`` bin."""
    rng = np.random.default_rng(seed)
    rows = []
    edges = np.linspace(0, 1, n_bins + 1)
    lower, upper = np.append(edges[:-1], 1.0), np.append(edges[1:], 1.0)
    for c in range(n_cases):
        for r in range(raters):
            conf = rng.uniform(0.5, 1.0, 300)
            conf[:5] = 1.0
            acc = (rng.random(300) < conf**2).astype(float)
            idx = np.searchsorted(edges, conf, side="right") - 1
            for b in range(n_bins + 1):
                sel = idx == b
                rows.append(
                    {"method": "tta", "case": f"case{c:02d}", "rater": r, "variant": "toplabel", "class": "all",
                     "class_index": -1, "bin": b, "lower": lower[b], "upper": upper[b], "count": float(sel.sum()),
                     "sum_confidence": float(conf[sel].sum()), "sum_accuracy": float(acc[sel].sum())}
                )
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df
