"""The `uqseg score` command: its options, parsed into :mod:`uqseg_cli.stages.score` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.bayes.measures import MEASURES
from uqseg_cli.bayes.sampling import METHODS
from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    Overwrite,
    Quiet,
    Seed,
    Threads,
    emit_json,
    finish,
)
from uqseg_cli.cli.params import complete_list
from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list
from uqseg_cli.quality.features import ALL_FEATURE_MODELS
from uqseg_cli.quality.inputs import FRAMEWORKS
from uqseg_cli.quality.scoring import ALL_METHODS, COMBINED
from uqseg_cli.stages.device import resolve_device

Target = Literal["dice", "iou"]  # = metrics.overlap.TARGETS (tested)
Loss = Literal["mse", "huber", "mse+pearson"]  # = quality.training.LOSSES (tested)
CRITIC_HEADS = ("blend", "boost", "mean")  # = quality.critic_head.CRITIC_HEADS (tested)


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
            autocompletion=complete_list((*METHODS, ALL_METHODS)),
            help="Uncertainty method(s), e.g. tta (repeat or comma list); joint = the features of every method side "
            "by side (features framework) (default: each method).",
        ),
    ] = None,
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            autocompletion=complete_list((*MEASURES, COMBINED, "all")),
            help="Measure(s), e.g. entropy; 'combined' = all measures (CNN: as channels; features: all features "
            "and the combined score); 'all' = each measure and combined. Repeat or comma list. (default: combined)",
        ),
    ] = None,
    framework: Annotated[
        list[str] | None,
        typer.Option(
            "--framework",
            "-f",
            autocompletion=complete_list(FRAMEWORKS),
            help="seg-unc (CNN on segmentation + uncertainty), img-seg-unc (CNN on image + segmentation + "
            "uncertainty), hybrid (the img-seg-unc CNN with the aggregated features joined before its head), "
            "critic (a segmentation network per fold learns the reference masks; its disagreement with the "
            "segmentation joins the features of a boosted regressor), "
            "features (linear, forest and boosted regression on aggregated features). Repeat or comma "
            "list. (default: features: the best held-out result per CPU minute, docs/quality.md)",
        ),
    ] = None,
    target: Annotated[
        Target, typer.Option("--target", help="Dice or IoU of the segmentation vs. the reference.")
    ] = "dice",
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
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Most epochs per fit. (default: 30; critic 48)")
    ] = None,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Early stopping: epochs without progress.")] = 6,
    val_fraction: Annotated[
        float | None,
        typer.Option("--val-fraction", min=0.0, max=0.5,
                     help="Part of each fit held out for early stopping. (default: 0.2; critic and seg-unc mask "
                     "regressor 0: the whole fold)"),
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="AdamW learning rate. (default: 1e-3; critic 5e-4)")
    ] = None,
    loss: Annotated[
        Loss, typer.Option("--loss", help="CNN loss (docs/quality.md).")
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
            autocompletion=complete_list(ALL_FEATURE_MODELS),
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
    fold_ensemble: Annotated[
        bool,
        typer.Option(
            "--fold-ensemble/--no-fold-ensemble",
            help="With --cv K, new cases get the mean of the K cross-fitting CNNs and the final one (all kept in "
            "the quality model, K+1 times the size); off by default: held out on ISIC it lowered R² "
            "(docs/quality.md).",
        ),
    ] = False,
    vote_level_pairs: Annotated[
        bool,
        typer.Option(
            "--vote-level-pairs/--no-vote-level-pairs",
            help="Train seg-unc/img-seg-unc CNNs also on the consensus levels of the method's T samples (voxels "
            "where at least k of them call foreground, k = 1..T), each with its own Dice against the reference: "
            "one more pair per training case and epoch (twice the fit); off by default: held out on ISIC it left "
            "R² unchanged and raised Spearman by 0.01 (docs/quality.md).",
        ),
    ] = False,
    learn_mask: Annotated[
        bool | None,
        typer.Option(
            "--learn-mask/--no-learn-mask",
            help="seg-unc/img-seg-unc/hybrid (2D): the CNN is the segmenter's architecture (fpn-<backbone>, "
            "started from its weights) that also learns each labelled case's reference mask; its Dice head reads "
            "the pooled encoder and how far its mask lies from the scored segmentation. (default: on where it starts "
            "from an fpn-<backbone> segmenter found by --init-from; held out on ISIC it raised R², docs/quality.md)",
            show_default=False,
        ),
    ] = None,
    critic_head: Annotated[
        str,
        typer.Option(
            "--critic-head",
            autocompletion=complete_list(CRITIC_HEADS),
            help="Regressor of the critic framework, built on boosted trees on the aggregated + critic features: "
            "blend (their mean with a ridge regression on the critic features; best in-site), boost (the trees "
            "alone) or mean (their mean with trees on the aggregated features alone: steadier under a change of "
            "acquisition, lower in-site R²).",
        ),
    ] = "blend",
    critic_tta: Annotated[
        int,
        typer.Option(
            "--critic-tta", min=1, max=8,
            help="Average each critic's probabilities over this many flips/quarter turns of its input (8: all of a "
            "square grid; volumes and other grids: their flips). N times the cost of applying the critics.",
        ),
    ] = 1,
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
    """Fits a quality regressor on the cases with a reference (never on cases the segmenter was trained on, unless
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
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.score import ScoreOptions, run

    if as_json and output == "-":
        raise UqsegError("--json and -o - both write to standard output; pick one")
    options = ScoreOptions(
        input=input, output=output, summary=summary, methods=split_list(method), measures=split_list(measure),
        frameworks=split_list(framework), target=target, model=model, save_model=save_model, cv=cv,
        backbone=backbone, pretrained=pretrained, input_size=input_size, epochs=epochs, patience=patience,
        val_fraction=val_fraction, lr=lr, loss=loss, init_from=init_from, feature_models=split_list(feature_models),
        agreement_channel=agreement_channel, fold_ensemble=fold_ensemble, vote_level_pairs=vote_level_pairs,
        learn_mask=learn_mask, critic_head=critic_head, critic_tta=critic_tta, batch_size=batch_size,
        features=features,
        include_train_cases=include_train_cases, failure_threshold=failure_threshold, seed=seed,
        overwrite=overwrite, device=device, threads=threads,
    )
    resolve_device(device)  # refuses a device this machine lacks before anything is read
    result = run(options, Report(quiet))
    if as_json:
        emit_json(result.summary)
    for msg in result.failed.values():
        typer.echo(f"uqseg: error: {msg}", err=True)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("score")(score)
