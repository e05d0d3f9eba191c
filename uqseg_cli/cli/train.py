"""The `uqseg train` command: its options, parsed into :mod:`uqseg_cli.stages.train` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    Overwrite,
    Quiet,
    Seed,
    Threads,
    emit_json,
)
from uqseg_cli.errors import EXIT_CASE_FAILED
from uqseg_cli.parsing import parse_size, parse_window, split_list


def train(
    input: Annotated[
        Path,
        typer.Option(
            "-i",
            "--input",
            help="Images or volumes: a file, a folder or a CSV manifest (case,image,mask[,split]). e.g. -i data/images",
        ),
    ],
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="Reference masks matched by case id (a folder; or a file name inside each "
            "case folder). e.g. --masks data/masks",
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Checkpoint to write; members k>0 go to <stem>.member<k>.pt. e.g. -o seg.pt"
        ),
    ] = Path("seg.pt"),
    model: Annotated[
        str, typer.Option("-m", "--model", help="Architecture (see `uqseg models`). e.g. -m unet-small")
    ] = "fpn-resnet18",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs. e.g. --epochs 25")] = 25,
    batch_size: BatchSize = 8,
    lr: Annotated[
        float,
        typer.Option("--lr", min=0.0, help="Peak AdamW learning rate (cosine schedule, 5% warm-up). e.g. --lr 1e-3"),
    ] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.")] = 1e-4,
    dropout: Annotated[
        float,
        typer.Option("--dropout", min=0.0, max=0.99, help="Spatial dropout rate in the decoder. e.g. --dropout 0.2"),
    ] = 0.2,
    dropout_at: Annotated[
        Literal["head", "decoder"],
        typer.Option(
            "--dropout-at",
            help="head: one dropout before the segmentation "
            "head (MC dropout re-runs only the head); decoder: in every decoder "
            "block too. e.g. --dropout-at decoder",
        ),
    ] = "head",
    input_size: Annotated[
        str | None,
        typer.Option(
            "--input-size",
            help="2D model grid HxW (default: median image size, longest side --max-side, "
            "rounded to the model's multiple); 3D model: inference tile DxHxW (default 128). "
            "e.g. --input-size 192x256",
        ),
    ] = None,
    max_side: Annotated[int, typer.Option("--max-side", min=16, help="Longest side of the default 2D grid.")] = 256,
    resize: Annotated[
        Literal["stretch", "letterbox"],
        typer.Option(
            "--resize",
            help="stretch (resize to the grid) or letterbox (keep the aspect ratio, pad). e.g. --resize letterbox",
        ),
    ] = "stretch",
    modality: Annotated[
        Literal["auto", "photo", "ct"],
        typer.Option("--modality", help="auto, photo or ct (auto: NIfTI or float images are CT)."),
    ] = "auto",
    ct_window: Annotated[
        str | None,
        typer.Option(
            "--ct-window", help="CT intensity window LO,HI in HU (default -200,300). e.g. --ct-window=-100,250"
        ),
    ] = None,
    patch_size: Annotated[
        str, typer.Option("--patch-size", help="3D model: training patch DxHxW. e.g. --patch-size 64x64x64")
    ] = "64x64x64",
    patches_per_volume: Annotated[
        int, typer.Option("--patches-per-volume", min=1, help="3D model: patches per volume and epoch.")
    ] = 8,
    halo: Annotated[
        int,
        typer.Option(
            "--halo",
            min=0,
            help="3D model: context voxels on each side of an inference tile (less than half the tile). e.g. --halo 16",
        ),
    ] = 16,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.9,
            help="Random validation part (ignored when the "
            "manifest has a split column; 0 = keep the last epoch). e.g. --val-fraction 0.2",
        ),
    ] = 0.2,
    members: Annotated[
        int, typer.Option("--members", min=1, help="Train K ensemble members with different seeds. e.g. --members 5")
    ] = 1,
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            min=2,
            help="Train K members each without one fold (honest "
            "out-of-fold predictions for quality targets). e.g. --folds 5",
        ),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option("--class-names", help="Comma list, background first. e.g. --class-names background,lesion"),
    ] = None,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Flips, rotations, scaling, colour/intensity jitter.")
    ] = True,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Start from timm hub weights (needs network access).")
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option("--log", help="Epoch log CSV (default <output stem>.log.csv). e.g. --log train.csv")
    ] = None,
    device: Device = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (ignored on the CPU).")] = True,
    threads: Threads = 0,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """2D models train on images (or on the axial slices of volumes) resized to the model grid; unet3d-small trains
    on random patches. Loss: cross-entropy + Dice; AdamW with a cosine schedule; the epoch with the best mean
    validation Dice (on the original grids) is kept. --seed makes CPU training reproducible.

    Examples:
      uqseg train -i ph2/images --masks ph2/masks -m fpn-resnet18 --epochs 25 -o seg.pt
      uqseg train -i cases.csv -m unet-small --members 5 -o seg.pt      # seg.pt, seg.member1.pt ... seg.member4.pt
      uqseg train -i ph2/images --masks ph2/masks --folds 5 -o seg.pt    # each member leaves one fold out
      uqseg train -i ct/ --masks label.nii.gz -m unet3d-small --patch-size 64 -o seg3d.pt
    """
    from uqseg_cli.models.registry import model_info
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.train import TrainStageOptions, run
    from uqseg_cli.training.augment import AugmentConfig
    from uqseg_cli.training.loop import TrainOptions

    dims = 3 if model_info(model).dims == 3 else 2
    training = TrainOptions(
        arch=model, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, dropout=dropout,
        dropout_at=dropout_at, pretrained=pretrained, input_size=parse_size(input_size, "--input-size", dims),
        max_side=max_side, resize=resize, modality=modality, ct_window=parse_window(ct_window),
        patch_size=parse_size(patch_size, "--patch-size", 3), patches_per_volume=patches_per_volume, halo=halo,
        val_fraction=val_fraction, seed=seed, members=members, folds=folds, augment=AugmentConfig(enabled=augment),
        amp=amp, class_names=split_list(class_names, unique=False) if class_names else None,
    )
    options = TrainStageOptions(
        input=input, masks=masks, output=output, log=log_file, training=training, overwrite=overwrite,
        device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if json_out:
        emit_json({**result.summary, "failed": result.failed})
    if result.failed:
        failed = result.failed
        typer.echo(f"uqseg: {len(failed)} case(s) could not be read: {', '.join(sorted(failed))}", err=True)
        raise typer.Exit(EXIT_CASE_FAILED)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
