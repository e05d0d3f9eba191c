"""`uqseg sample`: MC dropout, deep ensemble and TTA samples of every case, kept as running sums."""

from __future__ import annotations

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
    Seed,
    Threads,
    apply_threads,
    default_input,
    finish,
    resolve_device,
    stage_json,
)
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.sharding import plan_from_parent
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import log

METHOD_HELP = (
    "Comma list or repeat: mcdropout, ensemble, tta [default: every method the checkpoints allow]; or files "
    "(external predictions, one folder per sample: --from)."
)


def _default_checkpoints(pf) -> list[str]:
    """Checkpoint(s) recorded in predict.h5's config, resolved next to the file when relative."""
    for key in ("checkpoints", "checkpoint", "model"):
        val = pf.config.get(key)
        if not val:
            continue
        vals = [val] if isinstance(val, str) else [str(v) for v in val]
        out = []
        for v in vals:
            p = Path(v)
            if not p.is_absolute() and not p.exists() and (pf.path.parent / p).exists():
                p = pf.path.parent / p
            out.append(str(p))
        return out
    return []


def _resolve_checkpoints(specs: list[str]) -> list[Path]:
    from uqseg_cli.models.checkpoint import resolve_members

    paths: list[Path] = []
    for spec in specs:
        for p in resolve_members(spec):
            if p.resolve() not in {q.resolve() for q in paths}:
                paths.append(p)
    return paths


def sample(
    input: Annotated[
        Path | None, typer.Option("-i", "--input", help="predict.h5 from `uqseg predict` [default: ./predict.h5].")
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--model",
            help="Checkpoint(s): a file (its seg.member<k>.pt siblings join the ensemble), a folder, a glob, "
            "or a comma list; repeatable. Member 0 (the first) runs MC dropout and TTA. "
            "[default: the checkpoint recorded in predict.h5]. e.g. -m seg.pt or -m 'runs/*/seg.pt'",
        ),
    ] = None,
    methods: Annotated[list[str] | None, typer.Option("--method", help=METHOD_HELP)] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "-T",
            "--samples",
            min=1,
            help="Samples for MC dropout and TTA (TTA: at most 8 transforms unless --tta-intensity) [default: 20]; "
            "the ensemble has one per member.",
        ),
    ] = None,
    tta_intensity: Annotated[
        float,
        typer.Option(
            "--tta-intensity",
            min=0.0,
            help="TTA intensity jitter s: sample t sees a*x+b, a~U(1-s,1+s), b~U(-s,s) on the normalised input "
            "(0 = flips/rotations only). e.g. --tta-intensity 0.1",
        ),
    ] = 0.0,
    keep_samples: Annotated[
        bool, typer.Option("--keep-samples", help="Also store every sample (T, K, *spatial) float16 (large).")
    ] = False,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            help="--method files: folders of another tool's predictions, one per sample (comma list or repeat), "
            "files by case id as in `uqseg import`. e.g. --from fold0/,fold1/,fold2/,fold3/,fold4/",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file, e.g. -o samples.h5.")] = Path(
        "samples.h5"
    ),
    device: Device = "auto",
    threads: Threads = 0,
    batch_size: BatchSize = 8,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="float16 autocast on CUDA (ignored on the CPU).")] = True,
    seed: Seed = 0,
    num_parts: NumParts = None,
    part_id: PartId = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Draw stochastic predictions of every case of predict.h5 and store their running sums in samples.h5.

    Per case and method: Σp, Σlog p, ΣH[p] per voxel and the T predicted volumes, so `uqseg uncertainty` is
    exact for any T in memory that does not grow with T. Every random draw comes from (--seed, case, method):
    resumed and sharded runs write identical numbers.

    Examples:
      uqseg sample -m seg.pt                                  # predict.h5 -> samples.h5, all methods possible
      uqseg sample -i predict.h5 -m seg.pt --method mcdropout,tta -T 30 -o samples.h5
      uqseg sample -m 'runs/*/seg.pt' --method ensemble       # deep ensemble of several checkpoints
      uqseg sample -m seg.pt --num-parts 4 --part-id 0        # one part of an array job
      uqseg sample --method files --from fold0/,fold1/,fold2/,fold3/,fold4/   # nnU-Net folds as the samples
    """
    from uqseg_cli.bayes.sampling import METHODS, SamplePlan, check_mc_dropout, mc_dropout_mode, resolve_T, sample_case
    from uqseg_cli.io.prefetch import Prefetcher
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.sharding import select_part
    from uqseg_cli.io.store import StageFile, write_array
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint
    from uqseg_cli.models.inference import Predictor

    parent = default_input(input, "predict.h5", "predict file")
    apply_threads(threads)
    if "files" in split_list(methods) or sources:
        return _sample_files(parent, split_list(methods), split_list(sources), models, samples, output, keep_samples,
                             num_parts, part_id, overwrite, quiet, json_out)
    dev = resolve_device(device)
    with StageFile(parent, expect_stage="predict") as pf:
        case_ids, n_parts, p_id = plan_from_parent(pf, num_parts, part_id)
        specs = split_list(models) or _default_checkpoints(pf)
        if not specs:
            raise UqsegError("no checkpoint: pass -m CHECKPOINT (predict.h5 does not record one)")
        ckpts = _resolve_checkpoints(specs)

        asked = split_list(methods)
        bad = [m for m in asked if m not in METHODS]
        if bad:
            raise UqsegError(f"--method {','.join(bad)}: unknown; choose from {', '.join(METHODS)}")
        # one canonical order, so a resume with the same methods given in another order is the same run
        chosen = [m for m in METHODS if m in asked] if asked else list(METHODS)

        predictors = [Predictor.from_checkpoint(p, dev, batch_size, amp) for p in ckpts]
        _check_members(ckpts, predictors)
        if "ensemble" in chosen and len(predictors) < 2:
            if asked:
                raise UqsegError(
                    f"--method ensemble needs at least 2 checkpoints, got {len(ckpts)} ({ckpts[0]}); "
                    "pass several -m, a folder, a glob, or train with --members K"
                )
            log("ensemble skipped: only one checkpoint (give -m several checkpoints or train --members K)", quiet)
            chosen.remove("ensemble")
        if "mcdropout" in chosen:
            why = check_mc_dropout(predictors[0].model)
            if why:
                if asked:
                    raise UqsegError(f"--method mcdropout: {ckpts[0]}: {why}")
                log(f"mcdropout skipped: {ckpts[0]}: {why}", quiet)
                chosen.remove("mcdropout")
        if not chosen:
            raise UqsegError("no sampling method is possible with these checkpoints")
        try:
            T, notes = resolve_T(chosen, samples, len(predictors), tta_intensity)
        except ValueError as exc:
            raise UqsegError(str(exc)) from None
        for n in notes:
            log(n, quiet)

        amp_on = bool(amp and dev.type == "cuda")
        plan = SamplePlan(
            methods=chosen,
            T=T,
            seed=seed,
            tta_intensity=float(tta_intensity),
            keep_samples=keep_samples,
            max_batch=batch_size,
            amp=amp_on,
            member_names=[p.name for p in ckpts],
        )
        config = {
            "methods": chosen,
            "T": T,
            "seed": int(seed),
            "tta_intensity": float(tta_intensity),
            "keep_samples": bool(keep_samples),
            "amp": amp_on,
            "checkpoint_fingerprints": [checkpoint_fingerprint(p) for p in ckpts],
            "class_names": list(predictors[0].ckpt.class_names),
            # forward passes per batch change the last bits of the sums (~1e-6): part of the resume config
            "batch_size": int(batch_size),
            "agreement": 1,  # votes + overlap_volumes layout: a resume of an older file is refused, not mixed
        }
        if "mcdropout" in chosen:
            config["mcdropout_mode"] = mc_dropout_mode(predictors[0].model)
            log(
                f"mcdropout: {config['mcdropout_mode']} "
                + ("(encoder once, decoder T times)" if config["mcdropout_mode"] == "cached" else
                   "(dropout inside the encoder: T full passes)"),
                quiet,
            )
        train_ids = [list(p.ckpt.train_case_ids) for p in predictors]
        K = predictors[0].num_classes

        def load(case_id: str):
            cv = pf.case(case_id)
            return cv.get("image"), (cv.get("segmentation") if cv.has("segmentation") else None)

        # the next case's arrays are read in a thread while this one samples (io/prefetch.py)
        prefetch = Prefetcher(load, select_part(case_ids, n_parts, p_id))

        def process(case_id: str, group) -> None:
            cv = pf.case(case_id)
            where = f"{parent}: case {case_id}"
            if cv.has("probabilities") and cv.dataset("probabilities").shape[0] != K:
                raise InputError(
                    f"{where}: predict.h5 has {cv.dataset('probabilities').shape[0]} classes, "
                    f"the checkpoint {ckpts[0].name} has {K}"
                )
            image, seg = prefetch.get(case_id)
            spacing = cv.spacing
            group.attrs["spacing"] = list(spacing)
            sample_case(
                case_id, image, spacing, predictors, plan, group, train_ids=train_ids, write_array=write_array,
                segmentation=seg,
            )

        run = StageRun(
            stage="sample",
            out=output,
            config=config,
            case_ids=case_ids,
            parent=parent,
            num_parts=n_parts,
            part_id=p_id,
            overwrite=overwrite,
            quiet=quiet,
            inputs=[("-m", p) for p in ckpts],
        )
        log(
            f"sampling {', '.join(f'{m} (T={T[m]})' for m in chosen)} for {len(case_ids)} case(s) on {dev}", quiet
        )
        with prefetch:
            result = run_stage(run, process)
    log(f"wrote {result.out}", quiet)
    if json_out:
        stage_json(result, stage="sample", methods=chosen, T=T)
    finish(result)


def _sample_files(parent, methods, sources, models, samples, output, keep_samples, num_parts, part_id, overwrite,
                  quiet, as_json=False) -> None:
    """--method files: external predictions as the samples (bayes/external.py); no checkpoint involved."""
    from uqseg_cli.bayes.external import sample_files_stage

    if (methods or ["files"]) != ["files"] or models or samples is not None:
        raise UqsegError("--method files (with --from) takes one folder per sample and no -m/-T; run checkpoint "
                         "methods (mcdropout, ensemble, tta) in a separate `uqseg sample`")
    result = sample_files_stage(parent, sources, output, keep_samples=keep_samples, num_parts=num_parts,
                                part_id=part_id, overwrite=overwrite, quiet=quiet)
    if as_json:
        stage_json(result, stage="sample", methods=["files"], T={"files": len(sources)})
    finish(result)


def _check_members(paths, predictors) -> None:
    """Every member must share the first one's input grid, channels, classes and dimensionality; normalisation
    statistics may differ (separately trained checkpoints measure them on their own training data)."""
    ref = predictors[0]

    def grid(pred) -> dict:
        return {k: v for k, v in pred.ckpt.preprocessing.to_dict().items() if k not in ("mean", "std")}

    for p, pred in zip(paths[1:], predictors[1:], strict=True):
        if grid(pred) != grid(ref):
            diff = sorted(k for k in grid(ref) if grid(ref).get(k) != grid(pred).get(k))
            raise InputError(
                f"{p}: preprocessing ({', '.join(diff)}) differs from {paths[0]}; ensemble members must share the "
                "input grid and channels"
            )
        if pred.num_classes != ref.num_classes or pred.model.dims != ref.model.dims:
            raise InputError(
                f"{p}: {pred.num_classes} classes / {pred.model.dims}D, but {paths[0]} has "
                f"{ref.num_classes} classes / {ref.model.dims}D"
            )


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
