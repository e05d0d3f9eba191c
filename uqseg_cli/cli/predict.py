"""`uqseg predict`: segment images or volumes with a checkpoint into predict.h5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    apply_threads,
    finish,
    resolve_device,
    stage_json,
)
from uqseg_cli.errors import UqsegError
from uqseg_cli.progress import log


def predict(
    input: Annotated[
        Path,
        typer.Option(
            "-i",
            "--input",
            help="Images or volumes: a file, a folder, a folder of case folders or a CSV manifest. e.g. -i ph2/images",
        ),
    ],
    checkpoint: Annotated[
        Path, typer.Option("-m", "--model", help="Checkpoint from `uqseg train`. e.g. -m seg.pt")
    ] = Path("seg.pt"),
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file. e.g. -o predict.h5")] = Path(
        "predict.h5"
    ),
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="Reference masks by case id (a folder, or a file name inside each case "
            "folder); stored as `reference`. e.g. --masks ph2/masks",
        ),
    ] = None,
    raters: Annotated[
        list[str] | None,
        typer.Option(
            "--raters",
            help="Rater masks (folders or file names inside case folders), repeatable or "
            "comma list; stored as `raters` (R, ...). e.g. --raters task01_seg01.nii.gz,task01_seg02.nii.gz",
        ),
    ] = None,
    prob_dtype: Annotated[
        str,
        typer.Option(
            "--prob-dtype", help="Storage type of the probabilities: float16 or float32. e.g. --prob-dtype float32"
        ),
    ] = "float16",
    out_of_fold: Annotated[
        bool,
        typer.Option(
            "--oof/--no-oof",
            help="With a `train --folds` checkpoint: predict each training case "
            "with the member that never saw it (default on).",
        ),
    ] = True,
    nan_policy: Annotated[
        str,
        typer.Option(
            "--nan-policy",
            help="NaN/±inf voxels in an image: error (refuse the case), zero (replace by 0) or min (by the image's "
            "smallest finite value). e.g. --nan-policy min",
        ),
    ] = "error",
    device: Device = "auto",
    batch_size: BatchSize = 8,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="float16 autocast on CUDA (ignored on the CPU).")] = True,
    threads: Threads = 0,
    num_parts: NumParts = None,
    part_id: PartId = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Segment every case: softmax probabilities on the original grid, the argmax segmentation, and the image,
    references and rater masks, into predict.h5 (one group per case, resumable, shardable).

    2D models run on images directly and on volumes slice by slice (--batch-size slices per pass); unet3d-small
    runs tiles with context. Probabilities are stored as float16 unless --prob-dtype float32.

    Examples:
      uqseg predict -i ph2/images --masks ph2/masks -m seg.pt -o predict.h5
      uqseg predict -i qubiq_kidney --raters task01_seg01.nii.gz,task01_seg02.nii.gz,task01_seg03.nii.gz -m ct.pt
      uqseg predict -i volumes/ -m seg3d.pt --num-parts 8 --part-id 3     # one part of an array job
    """
    import numpy as np

    from uqseg_cli.io.cases import discover_cases, load_case, split_paths
    from uqseg_cli.io.fingerprint import input_identity
    from uqseg_cli.io.geometry import source_affine
    from uqseg_cli.io.nnunet import check_model_channels
    from uqseg_cli.io.prefetch import Prefetcher
    from uqseg_cli.io.readers import NAN_POLICIES
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.sharding import resolve_part, select_part
    from uqseg_cli.io.store import write_array
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint, read_checkpoint, resolve_members
    from uqseg_cli.models.inference import Predictor

    if prob_dtype not in ("float16", "float32"):
        raise UqsegError(f"--prob-dtype {prob_dtype!r}: expected float16 or float32")
    if nan_policy not in NAN_POLICIES:
        raise UqsegError(f"--nan-policy {nan_policy!r}: expected {', '.join(NAN_POLICIES)}")
    apply_threads(threads)
    dev = resolve_device(device)
    n_parts, p_id = resolve_part(num_parts, part_id)
    specs = {s.id: s for s in discover_cases(input, masks=masks, raters=raters)}
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
    predictors = [Predictor.from_checkpoint(p, dev, batch_size, amp) for p in paths]
    check_model_channels(specs.values(), predictors[0].prep.channels, f"{checkpoint} ({meta0.arch})")
    held_by = {cid: k for k, pr in enumerate(predictors) for cid in (pr.ckpt.fold_case_ids if len(paths) > 1 else [])}
    dtype = np.float16 if prob_dtype == "float16" else np.float32
    ckpt_rel = os.path.relpath(checkpoint.resolve(), output.resolve().parent)
    config = {
        "checkpoint": ckpt_rel,
        "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint),
        "arch": meta0.arch,
        "class_names": list(meta0.class_names),
        "prob_dtype": prob_dtype,
        "out_of_fold": len(paths) > 1,
        "amp": bool(amp and dev.type == "cuda"),
        # slices/tiles per pass change the last bits of the probabilities (~1e-6): part of the resume config
        "batch_size": int(batch_size),
        "nan_policy": nan_policy,
        # which images, masks and raters: a rerun with other inputs into this output is refused, not mixed
        **input_identity(list(specs.values()), input, output, masks, split_paths(raters)),
    }
    if len(paths) > 1:
        config["checkpoints"] = [os.path.relpath(p.resolve(), output.resolve().parent) for p in paths]
        config["checkpoint_fingerprints"] = [checkpoint_fingerprint(p) for p in paths]

    from uqseg_cli.metrics.overlap import overlap_per_class
    from uqseg_cli.training.data import infer_modality

    model_modality = predictors[0].ckpt.preprocessing.modality
    checks = {"modality": {}, "background": []}  # this run's cases, for the guard rails below
    # the next case decodes in a thread while this one runs through the model (io/prefetch.py)
    prefetch = Prefetcher(
        lambda cid: load_case(specs[cid], nan_policy=nan_policy, class_names=list(meta0.class_names)),
        select_part(sorted(specs), n_parts, p_id),
    )

    train_sets = [set(pr.ckpt.train_case_ids) for pr in predictors]

    def process(case_id: str, group) -> None:
        case = prefetch.get(case_id)
        k = held_by.get(case_id, 0)
        pred = predictors[k]
        probs = pred.predict_proba(case.image, case_id).numpy()
        seg = class_argmax(probs)
        checks["modality"][case_id] = infer_modality([case])
        if not seg.any():
            checks["background"].append(case_id)
        write_array(group, "image", case.image)
        write_array(group, "probabilities", probs, dtype=dtype)
        write_array(group, "segmentation", seg)
        if case.mask is not None:
            write_array(group, "reference", case.mask.astype(np.uint8))
            # mean foreground Dice against the reference (what `score` learns to predict), for the summary
            group.attrs["dice"] = float(overlap_per_class(seg, case.mask, probs.shape[0])[0].mean())
        if case.raters is not None:
            write_array(group, "raters", case.raters.astype(np.uint8))
        group.attrs["spacing"] = [float(s) for s in case.spacing]
        group.attrs["affine"] = source_affine(specs[case_id].image, case.spacing)
        group.attrs["source"] = case.source
        group.attrs["train_case"] = bool(case_id in train_sets[k])
        group.attrs["member"] = int(k)

    run = StageRun(
        stage="predict",
        out=output,
        config=config,
        case_ids=sorted(specs),
        parent=None,
        num_parts=n_parts,
        part_id=p_id,
        overwrite=overwrite,
        quiet=quiet,
        inputs=[("-i", input), ("--masks", masks), *[("--raters", r) for r in split_paths(raters)],
                *[("-m", p) for p in paths]],
    )
    log(f"predicting {len(specs)} case(s) with {meta0.arch} ({checkpoint}) on {dev}", quiet)
    with prefetch:
        result = run_stage(run, process)
    log(f"wrote {result.out}", quiet)
    _guard_rails(checks, model_modality, checkpoint)
    dice = dice_summary(result.out) if Path(result.out).exists() and not result.interrupted else None
    if dice is not None:
        log(
            f"Dice vs reference (--masks) over {dice['n']} case(s): mean {dice['mean']:.3f}, median "
            f"{dice['median']:.3f}, min {dice['min']:.3f} ({dice['min_case']})",
            quiet,
        )
    if json_out:
        stage_json(result, stage="predict", dice=dice)
    finish(result)


def _guard_rails(checks: dict, model_modality: str, checkpoint: Path) -> None:
    """One warning line each: a photo model on CT (or the reverse); all background for most cases."""
    from uqseg_cli.progress import warn

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
    import numpy as np

    with h5py.File(path, "r") as f:
        cases = f.get("cases")
        vals = {c: float(g.attrs["dice"]) for c, g in (cases.items() if cases is not None else []) if "dice" in g.attrs}
    if not vals:
        return None
    arr = np.array(list(vals.values()))
    worst = min(vals, key=lambda c: (vals[c], c))
    return {"n": len(vals), "mean": float(arr.mean()), "median": float(np.median(arr)), "min": vals[worst],
            "min_case": worst}


def class_argmax(probs):
    """Argmax over the class axis of (K, *spatial) as uint8, ties to the lower class (like ``np.argmax``), in K
    vectorised passes (avoids slow strided argmax over a leading axis)."""
    import numpy as np

    best = probs[0].copy()
    idx = np.zeros(probs.shape[1:], dtype=np.uint8)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        idx[better] = k
        np.maximum(best, probs[k], out=best)
    return idx


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
