"""`uqseg score`: predict each case's Dice without ground truth (quality regression), honestly evaluated."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from uqseg_cli.cli.aggregate import pick_methods_measures
from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    Overwrite,
    Quiet,
    Seed,
    Threads,
    apply_threads,
    default_input,
    emit_json,
    finish,
    resolve_device,
)
from uqseg_cli.errors import CaseError, InputError, UqsegError
from uqseg_cli.io.store import StageFile
from uqseg_cli.io.tables import check_writable, read_table, write_table
from uqseg_cli.metrics.overlap import TARGETS
from uqseg_cli.parsing import parse_size, split_list
from uqseg_cli.progress import FitProgress, Progress, log, warn
from uqseg_cli.quality.checkpoint import read_quality_checkpoint, save_quality_model
from uqseg_cli.quality.combined import CombinedStats
from uqseg_cli.quality.features import ALL_FEATURE_MODELS, FEATURE_MODELS
from uqseg_cli.quality.inputs import FRAMEWORKS
from uqseg_cli.quality.models import create_quality_model
from uqseg_cli.quality.regions import RegionParams, collect_features
from uqseg_cli.quality.scoring import (
    ALL_METHODS,
    CNN_MIN_LABELLED,
    COMBINED,
    Batch,
    Prediction,
    cnn_meta,
    feature_names,
    hybrid_features,
    load_raw,
    make_folds,
    predict_baseline_cv,
    predict_cnn_framework,
    predict_features,
    predict_features_loaded,
    score_rows,
    summary_rows,
    with_combined,
)
from uqseg_cli.quality.training import FitConfig, predict_cnn


def model_path_for(save: Path, n_configs: int, method: str, measure: str, framework: str) -> Path:
    """``quality.pt`` for one configuration, ``quality.<method>.<measure>.<framework>.pt`` for several."""
    if n_configs == 1:
        return save
    return save.with_name(f"{save.stem}.{method}.{measure}.{framework}{save.suffix}")


def score(
    input: Annotated[
        Path | None,
        typer.Option("-i", "--input", help="uncertainty.h5 from `uqseg uncertainty`. (default: uncertainty.h5)"),
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Per-case CSV, or - for standard output, e.g. -o scores.csv")
    ] = "scores.csv",
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help="Uncertainty method(s), e.g. tta (repeat or comma list); joint = the features of every method side "
            "by side (features framework) (default: each method).",
        ),
    ] = None,
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            help="Measure(s), e.g. entropy; 'combined' = all measures (CNN: as channels; features: all features "
            "and the combined score); 'all' = each measure and combined. Repeat or comma list. (default: combined)",
        ),
    ] = None,
    framework: Annotated[
        list[str] | None,
        typer.Option(
            "--framework",
            "-f",
            help="seg-unc (CNN on segmentation + uncertainty), img-seg-unc (CNN on image + segmentation + "
            "uncertainty), hybrid (the img-seg-unc CNN with the aggregated features joined before its head), "
            "features (linear and random-forest regression on aggregated features). Repeat or comma "
            "list. (default: features: the best held-out result per CPU minute, docs/quality.md)",
        ),
    ] = None,
    target: Annotated[str, typer.Option("--target", help="dice or iou (of the segmentation vs. the reference).")] = (
        "dice"
    ),
    model: Annotated[
        Path | None,
        typer.Option(
            "-m", "--model", help="Predict with an existing quality model instead of fitting, e.g. quality.pt."
        ),
    ] = None,
    save_model: Annotated[
        Path,
        typer.Option(
            "--save-model",
            help="Where the fitted model goes (several configurations: <stem>.<method>.<measure>.<framework>.pt).",
        ),
    ] = Path("quality.pt"),
    cv: Annotated[
        int,
        typer.Option(
            "--cv", min=0, help="K-fold cross-fitting: out-of-fold predictions for every case with a reference "
            "(0 or 1: no cross-fitting; the labelled cases then get in-sample predictions, not summarised)."
        ),
    ] = 5,
    backbone: Annotated[str, typer.Option("--backbone", help="timm backbone of the 2D CNN, e.g. resnet18.")] = (
        "resnet18"
    ),
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start from timm's ImageNet weights.")] = False,
    input_size: Annotated[
        str | None,
        typer.Option("--input-size", help="CNN input grid, e.g. 128 or 192x256 (default: 128 (2D), 64 (3D))."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Most epochs per fit.")] = 30,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Early stopping: epochs without progress.")] = 6,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", min=0.0, max=0.5, help="Part of each fit held out for early stopping.")
    ] = 0.2,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="AdamW learning rate.")] = 1e-3,
    loss: Annotated[
        str, typer.Option("--loss", help="CNN loss: mse, huber or mse+pearson (docs/quality.md). (default: mse)")
    ] = "mse",
    init_from: Annotated[
        str,
        typer.Option(
            "--init-from",
            help="Start the 2D CNN's backbone from a segmenter's trained encoder: auto (the segmenter recorded in "
            "predict.h5, when it has the same backbone), none, or a checkpoint path. (default: auto)",
        ),
    ] = "auto",
    feature_models: Annotated[
        list[str] | None,
        typer.Option(
            "--feature-models",
            help="Regressors of the features framework: linear, forest, boost (gradient-boosted trees); comma list. "
            "(default: linear,forest,boost)",
        ),
    ] = None,
    agreement_channel: Annotated[
        bool,
        typer.Option(
            "--agreement-channel/--no-agreement-channel",
            help="Feed the CNN the method's foreground vote fraction (where samples.h5 has vote counts); off by "
            "default: held out on ISIC it lowered R² (docs/quality.md).",
        ),
    ] = False,
    batch_size: BatchSize = 16,
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="Aggregated features from `uqseg aggregate` (long CSV) (default: computed from the input with the "
            "default regions).",
        ),
    ] = None,
    include_train_cases: Annotated[
        bool,
        typer.Option(
            "--include-train-cases",
            help="Also fit on (and summarise) cases the segmenter was trained on (their Dice is optimistic).",
        ),
    ] = False,
    failure_threshold: Annotated[
        float | None,
        typer.Option("--failure-threshold", help="AURC of failures (true Dice below this), e.g. 0.8 "
                     "(default: AURC of the loss 1 - Dice)."),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option("--summary", help="Summary CSV (default: <output stem>.summary.csv; none with -o -)."),
    ] = None,
    device: Device = "auto",
    threads: Threads = 0,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Predict the Dice of every case from its segmentation and uncertainty (and image), without ground truth.

    Fits a quality regressor on the cases with a reference (never on cases the segmenter was trained on, unless
    --include-train-cases), reports honest out-of-fold predictions for them (--cv K) and predicts the cases without
    a reference. The best single aggregated feature (linear fit, cross-fitted) is always reported next to the
    regressor. Writes scores.csv (case,method,measure,framework,predicted_dice,true_dice,abs_error,split,train_case)
    and a summary (n, R², Pearson, Spearman, MAE, AURC).

    Examples:
      uqseg score --method tta --measure entropy
      uqseg score --framework seg-unc,img-seg-unc,features --measure combined --cv 5 --json
      uqseg score -i new/uncertainty.h5 --model quality.pt -o new/scores.csv
      uqseg score --method mcdropout --measure mutual_information --backbone resnet34 --device cuda
    """
    if target not in TARGETS:
        raise UqsegError(f"--target {target!r}: choose dice or iou")
    if as_json and output == "-":
        raise UqsegError("--json and -o - both write to standard output; pick one")
    size = parse_size(input_size, "--input-size", minimum=8)
    frameworks = split_list(framework) or ["features"]
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        raise UqsegError(f"--framework {','.join(bad)}: choose from {', '.join(FRAMEWORKS)}")
    src = default_input(input, "uncertainty.h5", "uncertainty file")
    s_path = summary if summary is not None else (
        None if output == "-" else Path(output).with_name(f"{Path(output).stem}.summary.csv")
    )
    for p in (output, s_path):
        if p is not None:
            check_writable(p, overwrite)

    loaded = read_quality_checkpoint(model) if model is not None else None
    if loaded is not None:
        meta = loaded["meta"]
        for opt, given, have in (("--method", method, meta["method"]), ("--measure", measure, meta["measure"])):
            if split_list(given) and split_list(given) != [have]:
                raise UqsegError(f"{opt} {','.join(split_list(given))}: {model} was fitted for {opt} {have}")
        if framework is not None and frameworks != [meta["framework"]]:
            raise UqsegError(f"--framework {','.join(frameworks)}: {model} is a {meta['framework']} model")
        if meta.get("target", "dice") != target:
            log(f"using the model's target {meta['target']!r}", quiet)
            target = meta["target"]
        method, measure, frameworks = [meta["method"]], [meta["measure"]], [meta["framework"]]

    from uqseg_cli.quality.training import LOSSES

    kinds = split_list(feature_models) or list(FEATURE_MODELS)
    bad = [k for k in kinds if k not in ALL_FEATURE_MODELS]
    if bad:
        raise UqsegError(f"--feature-models {','.join(bad)}: choose from {', '.join(ALL_FEATURE_MODELS)}")

    if loss not in LOSSES:
        raise UqsegError(f"--loss {loss!r}: choose from {', '.join(LOSSES)}")

    apply_threads(threads)
    dev = resolve_device(device)
    cfg = FitConfig(
        epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
        seed=seed, pretrained=pretrained, loss=loss,
    )
    with StageFile(src, expect_stage="uncertainty") as sf:
        all_methods = split_list(method) == [ALL_METHODS]
        ids, methods, all_measures = pick_methods_measures(sf, None if all_methods else method, None)
        if all_methods:
            if any(f != "features" for f in frameworks):
                raise UqsegError("--method joint (every method's features side by side) works with --framework "
                                 "features only")
            methods = [ALL_METHODS]
        else:
            _warn_unequal_T(sf, ids, methods)
        wanted = split_list(measure) or [COMBINED]
        if "all" in wanted:
            wanted = [*all_measures, COMBINED]
        bad = [m for m in wanted if m != COMBINED and m not in all_measures]
        if bad:
            raise UqsegError(f"--measure {','.join(bad)}: not in {src} (it has {', '.join(all_measures)}, or combined)")
        prog = Progress(len(ids), "score: reading", quiet=quiet)
        try:
            read = sf.case(ids[0]).keys() if all_methods else methods
            got = collect_features(
                sf, ids, read, all_measures, RegionParams(), with_quality=True, progress=prog, with_hd95=False,
                with_features=features is None,  # a --features table replaces the aggregation
            )
        finally:
            prog.close()
        if features is not None:
            long = read_table(features, required=["case", "method", "measure", "region", "value"])
            long["case"] = long["case"].astype(str)
        else:
            long = got.long
        saved_stats = None
        if loaded is not None and loaded["meta"].get("combined_stats"):
            saved_stats = CombinedStats.from_json(loaded["meta"]["combined_stats"])
        long, combined_stats = with_combined(long, all_measures, saved_stats)
        ok_ids = [c for c in ids if c not in got.failed]
        if not ok_ids:
            raise InputError(f"{src}: no case could be read")
        q = got.quality.set_index("case")
        tgt = np.array([q[target].get(c, np.nan) if target in q else np.nan for c in ok_ids], dtype=np.float64)
        batch = Batch(ok_ids, tgt, np.array([got.train_case.get(c, False) for c in ok_ids]), long, all_measures)
        batch.set_labelled(include_train_cases)
        seen = int((np.isfinite(tgt) & batch.train_case).sum())
        if seen:
            what = "fitted on and summarised (--include-train-cases)" if include_train_cases else (
                "NOT fitted on nor summarised (pass --include-train-cases to use them)"
            )
            warn(f"{seen} case(s) with a reference were in the segmenter's training set (train_case in the "
                 f"predict file): their Dice is optimistic; they are {what}")
        n_lab = int(batch.labelled.sum())
        if loaded is None:
            if n_lab < 3:
                raise InputError(
                    f"{src}: {n_lab} case(s) with a usable reference; fitting a quality model needs at least 3 "
                    f"(or pass --model to predict with an existing one)"
                )
            if cv >= 2 and n_lab < cv:
                raise UqsegError(f"--cv {cv}: only {n_lab} labelled case(s); use --cv {max(n_lab, 2)} or fewer folds")
        cnns = [f for f in frameworks if f != "features"]
        if loaded is None and cnns and n_lab < CNN_MIN_LABELLED:
            warn(f"{n_lab} labelled case(s): below {CNN_MIN_LABELLED} a CNN regressor ({', '.join(cnns)}) does not "
                 "learn reliably and rarely beats the features regressor; use --framework features")
        folds = make_folds(batch, cv, seed) if cv >= 2 and n_lab >= max(cv, 3) else None
        if loaded is None and folds is None:
            warn("no cross-fitting (--cv < 2): labelled cases get in-sample predictions and no honest summary")

        n_configs = len(methods) * len(wanted) * len(frameworks)
        n_cnn = len(methods) * len(wanted) * len([f for f in frameworks if f != "features"])
        n_fits = 0 if loaded is not None else n_cnn * ((int(folds.max()) + 1 if folds is not None else 0) + 1)
        if n_fits:
            log(f"fitting {n_fits} CNN quality model(s) of at most {epochs} epochs "
                f"({n_cnn} configuration(s) x {n_fits // n_cnn} fit(s): cross-fitting folds + the final model)", quiet)
        fitprog = FitProgress(n_fits, epochs, "score: fits", quiet=quiet) if n_fits else None
        frames: list[pd.DataFrame] = []
        details: dict = {}
        saved: list[str] = []
        for m in methods:
            for meas in wanted:
                preds: list[Prediction] = []
                for fw in frameworks:
                    if loaded is not None:
                        preds.extend(_predict_loaded(sf, batch, loaded, dev, batch_size, quiet))
                        continue
                    if fw == "features":
                        arrays, fmeta = {}, None
                        for kind in kinds:
                            p = predict_features(batch, m, meas, kind, folds, seed)
                            preds.append(p)
                            arrays.update(p.arrays)
                            fmeta = p.model_meta
                        meta = {"format": "uqseg-quality/1", "framework": "features", "method": m, "measure": meas,
                                "target": target, **fmeta,
                                "combined_stats": combined_stats.to_json() if combined_stats else None,
                                "train_cases": [c for c, ok in zip(ok_ids, batch.labelled, strict=True) if ok]}
                        path = model_path_for(save_model, n_configs, m, meas, fw)
                        save_quality_model(path, meta, arrays=arrays)
                        saved.append(str(path))
                        continue
                    extra = feature_names(meas, all_measures, for_baseline=False, available=batch.available)
                    meta = cnn_meta(sf.case(ok_ids[0]), fw, m, meas, all_measures, backbone, size, target,
                                    pretrained, _num_classes(sf, ok_ids[0]), agreement=agreement_channel,
                                    extra_features=extra)
                    init = _segmenter_init(sf, init_from, meta, quiet)
                    if init is not None:
                        meta["init_from"] = init[0]
                        cfg = FitConfig(**{**cfg.__dict__, "init_state": init[1]})
                    prog = Progress(len(ok_ids), f"score: inputs {m}/{meas}/{fw}", quiet=quiet)
                    try:
                        x_raw = load_raw(sf, ok_ids, meta, prog)
                    except CaseError as exc:
                        raise InputError(str(exc)) from None
                    finally:
                        prog.close()
                    try:
                        p = predict_cnn_framework(batch, x_raw, meta, folds, cfg, dev,
                                                  log=None if quiet else (lambda s: log(s)), progress=fitprog)
                    except BaseException:
                        fitprog.close()
                        raise
                    p.model_meta["segmenter"] = _segmenter_info(sf)
                    path = model_path_for(save_model, n_configs, m, meas, fw)
                    save_quality_model(path, p.model_meta, p.model)
                    saved.append(str(path))
                    preds.append(p)
                base = predict_baseline_cv(batch, m, meas, folds if loaded is None else _folds_any(batch, cv, seed))
                if base is not None:
                    preds.append(base)
                for p in preds:
                    frames.append(score_rows(batch, m, meas, p, target))
                    details[(m, meas, p.framework)] = p.detail

        if fitprog is not None:
            fitprog.close()
    scores = pd.concat(frames, ignore_index=True)
    summ = summary_rows(scores, target, details, failure_threshold, include_train_cases)
    write_table(scores, output)
    if s_path is not None:
        write_table(summ, s_path)
    _report(summ, quiet)
    if saved:
        log(f"quality model(s) -> {', '.join(saved)}", quiet)
    log(f"scored {len(ok_ids)} case(s) ({n_lab} labelled) -> {output}", quiet)
    if as_json:
        doc = {
            "input": str(src), "output": str(output), "summary_csv": str(s_path) if s_path else None,
            "target": target, "cv": cv if folds is not None else 0, "n_cases": len(ok_ids), "n_labelled": n_lab,
            "models": saved, "failed": got.failed,
            "summary": json.loads(summ.to_json(orient="records")),
        }
        emit_json(doc)
    for msg in got.failed.values():
        typer.echo(f"uqseg: error: {msg}", err=True)
    finish(failed=got.failed)


def sample_counts(sf: StageFile, case_id: str, methods: list[str]) -> dict[str, int]:
    """Samples T per method (samples.h5's groups of ``case_id``, else its config), for the methods known."""
    out: dict[str, int] = {}
    try:
        samples = sf.upstream("sample")
    except Exception:
        return out
    for m in methods:
        g = samples.h5.get(f"cases/{case_id}/{m}")
        t = g.attrs.get("T") if g is not None else None
        if t is None:
            t = (samples.config.get("T") or {}).get(m)
        if t is not None:
            out[m] = int(t)
    return out


def _warn_unequal_T(sf: StageFile, ids: list[str], methods: list[str]) -> None:
    """Guard rail: methods drawn with different numbers of samples T compared in one score (one line)."""
    ts = sample_counts(sf, ids[0], methods) if ids and len(methods) > 1 else {}
    if len(set(ts.values())) > 1:
        counts = ", ".join(f"{m} T={t}" for m, t in ts.items())
        warn(f"methods with different sample counts are compared in one score ({counts}): "
             "uncertainty estimates from fewer samples are noisier, so part of any difference between them is T "
             "(sample again with equal -T, or score each method on its own)")


def _folds_any(batch: Batch, cv: int, seed: int):
    """Folds for the baseline in --model mode (the baseline is always cross-fitted on the labelled cases)."""
    n = int(batch.labelled.sum())
    k = cv if cv >= 2 else 5
    return make_folds(batch, min(k, n), seed) if n >= 3 else None


def _num_classes(sf: StageFile, case_id: str) -> int:
    from uqseg_cli.quality.regions import num_classes_of

    return num_classes_of(sf.case(case_id))


def _segmenter_init(sf: StageFile, spec: str, meta: dict, quiet: bool) -> tuple[str, dict] | None:
    """``(path, state_dict)`` of the segmenter whose encoder starts the CNN, or None (``--init-from``)."""
    from uqseg_cli.models.checkpoint import read_checkpoint

    if spec == "none" or meta["dims"] != 2:
        return None
    if spec == "auto":
        info = _segmenter_info(sf)
        if "checkpoint" not in info:
            return None
        path = Path(info["checkpoint"])
        if not path.is_absolute():
            path = Path(info["predict_file"]).parent / path
        if not path.exists():
            log(f"--init-from auto: segmenter {path} not found; the CNN starts from random weights", quiet)
            return None
    else:
        path = Path(spec)
    ck, state = read_checkpoint(path)
    backbone = ck.arch[len("fpn-"):] if ck.arch.startswith("fpn-") else None  # fpn-<timm backbone>
    if backbone != meta["backbone"]:
        msg = f"--init-from: {path} has backbone {backbone!r}, the CNN {meta['backbone']!r}"
        if spec != "auto":
            raise UqsegError(msg)
        log(f"{msg}: the CNN starts from random weights", quiet)
        return None
    log(f"CNN backbone starts from the encoder of {path}", quiet)
    return str(path), state


def _segmenter_info(sf: StageFile) -> dict:
    try:
        pred = sf.upstream("predict")
    except Exception:
        return {}
    cfg = pred.config
    names = ("checkpoint", "arch", "checkpoint_fingerprint", "class_names", "out_of_fold")
    keep = {k: cfg[k] for k in names if k in cfg}
    return {"predict_file": str(pred.path), "predict_fingerprint": pred.fingerprint, **keep}


def _predict_loaded(sf: StageFile, batch: Batch, loaded: dict, dev, batch_size: int, quiet: bool) -> list[Prediction]:
    """Predictions of a loaded ``quality.pt``; cases it was fitted on are marked ``split="train"``."""
    from uqseg_cli.quality.inputs import standardize

    meta = loaded["meta"]
    trained_on = set(meta.get("train_cases", []))
    overlap = [c for c in batch.case_ids if c in trained_on]
    if overlap:
        warn(f"{len(overlap)} case(s) were in the quality model's own training set (e.g. {overlap[0]}): "
             "their predictions are in-sample (split=train) and not summarised")
    split = np.array(["train" if c in trained_on else "test" for c in batch.case_ids], dtype=object)
    if meta["framework"] == "features":
        preds = predict_features_loaded(batch, meta["method"], meta, loaded["arrays"])
        for p in preds:
            p.split = split
        return preds
    net = create_quality_model(meta)
    net.load_state_dict(loaded["state_dict"])
    net.to(dev)
    prog = Progress(len(batch.case_ids), "score: inputs", quiet=quiet)
    try:
        x_raw = load_raw(sf, batch.case_ids, meta, prog)
    except CaseError as exc:
        raise InputError(str(exc)) from None
    finally:
        prog.close()
    from uqseg_cli.quality.training import standardize_extra

    z = standardize_extra(hybrid_features(batch, meta), meta)
    pred = predict_cnn(net, standardize(x_raw, meta), batch_size, dev, z=z)
    return [Prediction(meta["framework"], pred, split, detail=f"loaded {meta['backbone']}")]


def _report(summ: pd.DataFrame, quiet: bool) -> None:
    for r in summ.itertuples():
        if r.beats_baseline is False:
            warn(f"{r.method}/{r.measure}/{r.framework}: R² {r.r2:.3f} does not beat the best single feature "
                 f"({r.method}/{r.measure}/baseline); do not rely on this regressor")
    if quiet or summ.empty:
        return
    lines = ["method/measure/framework                      n     R2  Pearson Spearman    MAE   AURC"]
    for r in summ.itertuples():
        name = f"{r.method}/{r.measure}/{r.framework}"
        lines.append(
            f"{name:<44} {r.n:>3} {r.r2:>6.3f} {r.pearson:>8.3f} {r.spearman:>8.3f} {r.mae:>6.3f} {r.aurc:>6.3f}"
        )
    print("\n".join(lines), file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("score")(score)
