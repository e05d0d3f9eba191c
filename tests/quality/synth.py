"""Synthetic predict.h5 → samples.h5 → uncertainty.h5 chains for the aggregate/score tests (tiny 2D or 3D cases).

Each case has a disc (2D) or ball (3D) reference; the segmentation is that shape shifted by a per-case amount, so
Dice varies between cases; the uncertainty maps are high where segmentation and reference disagree (plus noise),
so they carry the quality signal. ``train_case`` is True for the ids in ``train_ids``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from uqseg_cli.io.store import write_array, write_root

MEASURES = ("confidence", "entropy", "expected_entropy", "mutual_information", "epkl")


def _shape_mask(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


def make_case(rng: np.random.Generator, shape: tuple[int, ...], with_ref: bool = True):
    """Arrays of one synthetic case: image, segmentation, reference, maps (measure -> map), volumes (T, 2)."""
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, len(shape))
    radius = min(shape) * rng.uniform(0.2, 0.3)
    ref = _shape_mask(shape, centre, radius)
    shift = rng.uniform(0, radius * 0.9)
    direction = rng.normal(size=len(shape))
    direction /= np.linalg.norm(direction)
    seg = _shape_mask(shape, centre + shift * direction, radius)
    wrong = (seg != ref).astype(float)
    ent = np.clip(0.6 * wrong + 0.05 * rng.random(shape), 0, np.log(2))
    conf = 1 - ent / 2
    maps = {
        "confidence": conf,
        "entropy": ent,
        "expected_entropy": 0.8 * ent,
        "mutual_information": 0.2 * ent,
        "epkl": 0.25 * ent,
    }
    image = np.stack([seg * 120 + rng.integers(0, 60, shape)] * 3).astype(np.uint8)
    vol = seg.sum() / 1000.0
    volumes = np.stack([np.zeros(4), vol * (1 + shift / radius * rng.normal(0, 0.2, 4))], axis=1)
    return {
        "image": image,
        "segmentation": seg.astype(np.uint8),
        "reference": ref.astype(np.uint8) if with_ref else None,
        "maps": {k: v.astype(np.float32) for k, v in maps.items()},
        "volumes": volumes,
    }


def write_chain(
    folder: Path,
    n: int = 12,
    shape: tuple[int, ...] = (32, 32),
    seed: int = 0,
    no_ref: tuple[str, ...] = (),
    train_ids: tuple[str, ...] = (),
    methods: tuple[str, ...] = ("tta",),
    prefix: str = "case",
    votes: bool = False,
) -> dict[str, dict]:
    """Write ``predict.h5``, ``samples.h5`` and ``uncertainty.h5`` into ``folder``; returns the case arrays.

    ``votes``: ``samples.h5`` also holds each method's vote counts ``(2, *shape)`` uint16 of T = 4 sampled
    segmentations (the segmentation shifted by -1..2 voxels along the first axis; case key ``samples``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:02d}" for i in range(n)]
    cases = {cid: make_case(rng, shape, with_ref=cid not in no_ref) for cid in ids}
    spacing = np.array([0.5] * len(shape))
    fps = {}

    def root(f, stage, parent, parent_fp):
        write_root(
            f, stage=stage, config={"synthetic": True, "class_names": ["background", "lesion"]}, parent=parent,
            parent_fp=parent_fp, case_ids=ids, num_parts=1, part_id=0, done_ids=ids,
        )
        return f.attrs["fingerprint"]

    with h5py.File(folder / "predict.h5", "w") as f:
        fps["predict"] = root(f, "predict", "", "")
        for cid, c in cases.items():
            g = f.create_group(f"cases/{cid}")
            write_array(g, "image", c["image"])
            p1 = c["segmentation"].astype(np.float16)
            write_array(g, "probabilities", np.stack([1 - p1, p1]))
            write_array(g, "segmentation", c["segmentation"])
            if c["reference"] is not None:
                write_array(g, "reference", c["reference"])
            g.attrs["spacing"] = spacing
            g.attrs["source"] = f"synthetic/{cid}"
            g.attrs["train_case"] = cid in train_ids
            g.attrs["complete"] = True
    with h5py.File(folder / "samples.h5", "w") as f:
        fps["samples"] = root(f, "sample", "predict.h5", fps["predict"])
        for cid, c in cases.items():
            g = f.create_group(f"cases/{cid}")
            for m in methods:
                gm = g.create_group(m)
                write_array(gm, "volumes", c["volumes"])
                gm.attrs["T"] = 4
                if votes:
                    c["samples"] = np.stack([np.roll(c["segmentation"], s, axis=0) for s in (-1, 0, 1, 2)])
                    fg = c["samples"].sum(axis=0).astype(np.uint16)
                    write_array(gm, "votes", np.stack([4 - fg, fg]))
            g.attrs["complete"] = True
    with h5py.File(folder / "uncertainty.h5", "w") as f:
        root(f, "uncertainty", "samples.h5", fps["samples"])
        for cid, c in cases.items():
            g = f.create_group(f"cases/{cid}")
            for m in methods:
                gm = g.create_group(m)
                for name, arr in c["maps"].items():
                    write_array(gm, name, arr)
                write_array(gm, "mean_segmentation", c["segmentation"])
            g.attrs["complete"] = True
    return cases
