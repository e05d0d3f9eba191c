"""Stage ``predict``: segment images or volumes with a checkpoint into predict.h5.

Layout written (per case): see :data:`LAYOUT`; attributes ``spacing``, ``affine`` (4×4, of the source image),
``source`` (the image file), ``train_case`` (the checkpoint's member trained on it), ``member`` (the member that
predicted it) and, with a reference, ``dice`` (mean foreground Dice of the segmentation). ``stages.import_`` writes
the same layout from another tool's predictions (:class:`ImageStageOptions`, :func:`write_case`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.errors import UqsegError
from uqseg_cli.io.cases import split_paths
from uqseg_cli.progress import warn
from uqseg_cli.stages.base import CaseStageOptions, Report, StageResult, option, resume_config, stage_run
from uqseg_cli.stages.device import apply_threads, resolve_device

STAGE = "predict"
LAYOUT = {
    "image": "(C, *spatial) as read (uint8 photos, float32 CT): the image the probabilities belong to",
    "probabilities": "float16 or float32 (K, *spatial): softmax probabilities on the original grid",
    "segmentation": "uint8 (*spatial): argmax of the probabilities",
    "reference": "uint8 (*spatial): the reference mask (--masks), when given",
    "raters": "uint8 (R, *spatial): the rater masks (--raters), when given",
}
PROB_DTYPES = ("float16", "float32")


@dataclass(kw_only=True)
class ImageStageOptions(CaseStageOptions):
    """Options of the stages that read images (with masks and raters) and write predict.h5: predict and import."""

    input: Path  # images or volumes: a file, a folder, case folders or a CSV manifest
    output: Path = Path("predict.h5")
    masks: Path | None = None
    raters: list[Path] = option(factory=list)  # comma lists are split (``--raters a,b --raters c``)
    prob_dtype: str = option("float16", config=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.input = Path(self.input)
        self.masks = Path(self.masks) if self.masks is not None else None
        self.raters = split_paths(self.raters)
        if self.prob_dtype not in PROB_DTYPES:
            raise UqsegError(f"--prob-dtype {self.prob_dtype!r}: expected float16 or float32")

    @property
    def dtype(self) -> type:
        return np.float16 if self.prob_dtype == "float16" else np.float32

    def identity(self, specs) -> dict:
        """The resume-config entries naming the images, masks and raters: a rerun with other inputs into this
        output is refused, not mixed."""
        from uqseg_cli.io.fingerprint import input_identity

        return input_identity(list(specs), self.input, self.output, self.masks, self.raters)

    def inputs(self) -> list[tuple[str, Path | None]]:
        """The inputs the output must not overwrite, by option."""
        return [("-i", self.input), ("--masks", self.masks), *[("--raters", r) for r in self.raters]]


@dataclass(kw_only=True)
class PredictOptions(ImageStageOptions):
    """Options of ``predict``; ``out_of_fold``: with a ``train --folds`` checkpoint, each training case is
    predicted by the member that never saw it."""

    checkpoint: Path = Path("seg.pt")
    out_of_fold: bool = True  # resolved: the config records whether fold members were used
    nan_policy: str = option("error", config=True)
    # slices/tiles per pass change the last bits of the probabilities (~1e-6): part of the resume config
    batch_size: int = option(8, config=True)
    amp: bool = True  # resolved: the config records whether autocast ran (CUDA only)

    def __post_init__(self) -> None:
        from uqseg_cli.io.readers import NAN_POLICIES

        super().__post_init__()
        self.checkpoint = Path(self.checkpoint)
        if self.nan_policy not in NAN_POLICIES:
            raise UqsegError(f"--nan-policy {self.nan_policy!r}: expected {', '.join(NAN_POLICIES)}")


def class_argmax(probs):
    """Argmax over the class axis of (K, *spatial) as uint8, ties to the lower class (like ``np.argmax``), in K
    vectorised passes (avoids slow strided argmax over a leading axis)."""
    best = probs[0].copy()
    idx = np.zeros(probs.shape[1:], dtype=np.uint8)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        idx[better] = k
        np.maximum(best, probs[k], out=best)
    return idx


def write_case(group, case, probabilities, segmentation, dtype, affine) -> None:
    """The datasets and attributes of one case every predict.h5 writer shares: image, probabilities (as
    ``dtype``), segmentation, reference and raters when the case has them, spacing, affine, source."""
    from uqseg_cli.io.store import write_array

    write_array(group, "image", case.image)
    write_array(group, "probabilities", probabilities, dtype=dtype)
    write_array(group, "segmentation", segmentation)
    if case.mask is not None:
        write_array(group, "reference", case.mask.astype(np.uint8))
    if case.raters is not None:
        write_array(group, "raters", case.raters.astype(np.uint8))
    group.attrs["spacing"] = [float(s) for s in case.spacing]
    group.attrs["affine"] = np.asarray(affine, dtype=np.float64)
    group.attrs["source"] = case.source


def checkpoint_paths(checkpoint: Path, out_of_fold: bool) -> tuple[list[Path], object]:
    """The checkpoints to predict with (the fold members of a ``--folds`` checkpoint when ``out_of_fold``, else
    the one) and the main checkpoint's meta; refuses an incomplete set of fold members."""
    from uqseg_cli.models.checkpoint import read_checkpoint, resolve_members

    meta0, _ = read_checkpoint(checkpoint)
    paths = [checkpoint]
    if meta0.folds and out_of_fold:
        paths = resolve_members(checkpoint)
        metas = [read_checkpoint(p)[0] for p in paths]
        if sorted(m.member for m in metas) != list(range(meta0.folds)):
            raise UqsegError(
                f"{checkpoint}: fold checkpoint of {meta0.folds} members, found members "
                f"{sorted(m.member for m in metas)} next to it (or pass --no-oof)"
            )
    return paths, meta0


def resolved_config(options: PredictOptions, paths: list[Path], meta0, dev, specs) -> dict:
    """The resume-config values resolved at run time: checkpoints (relative to the output) and their
    fingerprints, architecture, classes, whether fold members and autocast are used, the inputs' identity."""
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint

    out_dir = options.output.resolve().parent
    extra = {
        "checkpoint": os.path.relpath(options.checkpoint.resolve(), out_dir),
        "checkpoint_fingerprint": checkpoint_fingerprint(options.checkpoint),
        "arch": meta0.arch,
        "class_names": list(meta0.class_names),
        "out_of_fold": len(paths) > 1,
        "amp": bool(options.amp and dev.type == "cuda"),
        **options.identity(specs),
    }
    if len(paths) > 1:
        extra["checkpoints"] = [os.path.relpath(p.resolve(), out_dir) for p in paths]
        extra["checkpoint_fingerprints"] = [checkpoint_fingerprint(p) for p in paths]
    return extra


@dataclass
class Predicted:
    """One case through the model, waiting to be written (:func:`write_predicted`)."""

    case: object  # io.cases.Case
    probabilities: np.ndarray
    segmentation: np.ndarray

    @property
    def nbytes(self) -> int:
        img = getattr(self.case, "image", None)
        return int(self.probabilities.nbytes + self.segmentation.nbytes + (img.nbytes if img is not None else 0))


def compute_case(case_id: str, case, predictor, checks: dict) -> Predicted:
    """The model's part of one case: probabilities and segmentation; notes the case's modality and whether it is
    all background in ``checks`` (for :func:`guard_rails`)."""
    from uqseg_cli.training.data import infer_modality

    probs = predictor.predict_proba(case.image, case_id).numpy()
    seg = class_argmax(probs)
    checks["modality"][case_id] = infer_modality([case])
    if not seg.any():
        checks["background"].append(case_id)
    return Predicted(case, probs, seg)


def write_predicted(group, done: Predicted, spec, member: int, train_case: bool, dtype) -> None:
    """Write a :class:`Predicted` case into ``group`` (arrays, attributes, the Dice against its reference)."""
    from uqseg_cli.io.geometry import source_affine
    from uqseg_cli.metrics.overlap import overlap_per_class

    case, probs, seg = done.case, done.probabilities, done.segmentation
    write_case(group, case, probs, seg, dtype, source_affine(spec.image, case.spacing))
    if case.mask is not None:
        # mean foreground Dice against the reference (what `score` learns to predict), for the summary
        group.attrs["dice"] = float(overlap_per_class(seg, case.mask, probs.shape[0])[0].mean())
    group.attrs["train_case"] = bool(train_case)
    group.attrs["member"] = int(member)


def guard_rails(checks: dict, model_modality: str, checkpoint: Path) -> None:
    """One warning line each: a photo model on CT (or the reverse); all background for most cases."""
    seen = checks["modality"]
    other = sorted(c for c, m in seen.items() if m != model_modality)
    if other:
        what = {"ct": "CT (NIfTI or float intensities)", "photo": "photos (8/16-bit images)"}
        warn(
            f"{checkpoint} was trained on {what.get(model_modality, model_modality)}, but {len(other)} of "
            f"{len(seen)} case(s) look like {what.get(seen[other[0]], seen[other[0]])} (e.g. {other[0]}): its "
            "predictions there are unlikely to mean anything; use a model trained on that modality"
        )
    empty = sorted(checks["background"])
    if seen and len(empty) * 2 > len(seen):
        warn(
            f"{checkpoint} predicts only background for {len(empty)} of {len(seen)} case(s) (e.g. {empty[0]}): "
            "a wrong checkpoint for this data, a modality or intensity mismatch, or an undertrained model"
        )


def dice_summary(path: Path) -> dict | None:
    """Mean, median and min of the per-case Dice ``predict`` stored (cases with a reference), or None."""
    import h5py

    with h5py.File(path, "r") as f:
        cases = f.get("cases")
        vals = {c: float(g.attrs["dice"]) for c, g in (cases.items() if cases is not None else []) if "dice" in g.attrs}
    if not vals:
        return None
    arr = np.array(list(vals.values()))
    worst = min(vals, key=lambda c: (vals[c], c))
    return {"n": len(vals), "mean": float(arr.mean()), "median": float(np.median(arr)), "min": vals[worst],
            "min_case": worst}


def run(options: PredictOptions, report: Report | None = None) -> StageResult:
    """Segment every case of ``options.input`` with ``options.checkpoint`` into ``options.output``."""
    from uqseg_cli.io.cases import discover_cases, load_case
    from uqseg_cli.io.nnunet import check_model_channels
    from uqseg_cli.io.prefetch import Prefetcher
    from uqseg_cli.io.runner import run_stage
    from uqseg_cli.io.sharding import resolve_part, select_part
    from uqseg_cli.models.inference import Predictor

    report = report or Report()
    apply_threads(options.threads)
    dev = resolve_device(options.device)
    n_parts, p_id = resolve_part(options.num_parts, options.part_id)
    specs = {s.id: s for s in discover_cases(options.input, masks=options.masks, raters=options.raters)}
    paths, meta0 = checkpoint_paths(options.checkpoint, options.out_of_fold)
    predictors = [Predictor.from_checkpoint(p, dev, options.batch_size, options.amp) for p in paths]
    check_model_channels(specs.values(), predictors[0].prep.channels, f"{options.checkpoint} ({meta0.arch})")
    held_by = {cid: k for k, pr in enumerate(predictors) for cid in (pr.ckpt.fold_case_ids if len(paths) > 1 else [])}
    train_sets = [set(pr.ckpt.train_case_ids) for pr in predictors]
    config = resume_config(options, **resolved_config(options, paths, meta0, dev, specs.values()))
    class_names = list(meta0.class_names)
    checks: dict = {"modality": {}, "background": []}  # this run's cases, for the guard rails
    # the next case decodes in a thread while this one runs through the model (io/prefetch.py)
    prefetch = Prefetcher(
        lambda cid: load_case(specs[cid], nan_policy=options.nan_policy, class_names=class_names),
        select_part(sorted(specs), n_parts, p_id),
    )
    run = stage_run(
        STAGE, options, report,
        config=config,
        case_ids=sorted(specs),
        parent=None,
        part=(n_parts, p_id),
        inputs=[*options.inputs(), *[("-m", p) for p in paths]],
    )
    report.log(f"predicting {len(specs)} case(s) with {meta0.arch} ({options.checkpoint}) on {dev}")

    def compute(cid: str) -> Predicted:
        return compute_case(cid, prefetch.get(cid), predictors[held_by.get(cid, 0)], checks)

    def write(cid: str, group, done: Predicted) -> None:
        k = held_by.get(cid, 0)
        write_predicted(group, done, specs[cid], k, cid in train_sets[k], options.dtype)

    # write-behind: case i is compressed and journalled in a thread while case i + 1 runs through the model
    with prefetch:
        result = run_stage(run, write, compute=compute)
    report.log(f"wrote {result.out}")
    guard_rails(checks, predictors[0].ckpt.preprocessing.modality, options.checkpoint)
    dice = dice_summary(result.out) if Path(result.out).exists() and not result.interrupted else None
    if dice is not None:
        report.log(
            f"Dice vs reference (--masks) over {dice['n']} case(s): mean {dice['mean']:.3f}, median "
            f"{dice['median']:.3f}, min {dice['min']:.3f} ({dice['min_case']})"
        )
    return StageResult.of(result, stage=STAGE, dice=dice)
