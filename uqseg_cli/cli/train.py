"""`uqseg train`: fit a segmentation network (or K ensemble members / K fold members) on images with masks."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    Overwrite,
    Quiet,
    Seed,
    Threads,
    apply_threads,
    emit_json,
    resolve_device,
)
from uqseg_cli.errors import EXIT_CASE_FAILED, InputError, UqsegError
from uqseg_cli.parsing import parse_size, split_list
from uqseg_cli.progress import Progress, log, warn


def parse_window(text: str | None) -> list[float] | None:
    """``"-200,300"`` → [-200.0, 300.0] (lo < hi)."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UqsegError(f"--ct-window {text!r}: expected LO,HI in HU, e.g. --ct-window=-200,300") from None
    if not lo < hi:
        raise UqsegError(f"--ct-window {text!r}: LO must be below HI")
    return [lo, hi]


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
        str,
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
        str,
        typer.Option(
            "--resize",
            help="stretch (resize to the grid) or letterbox (keep the aspect ratio, pad). e.g. --resize letterbox",
        ),
    ] = "stretch",
    modality: Annotated[
        str, typer.Option("--modality", help="auto, photo or ct (auto: NIfTI or float images are CT).")
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
    """Train a segmentation network on images or volumes with reference masks.

    2D models train on images (or on the axial slices of volumes) resized to the model grid; unet3d-small trains
    on random patches. Loss: cross-entropy + Dice; AdamW with a cosine schedule; the epoch with the best mean
    validation Dice (on the original grids) is kept. --seed makes CPU training reproducible.

    Examples:
      uqseg train -i ph2/images --masks ph2/masks -m fpn-resnet18 --epochs 25 -o seg.pt
      uqseg train -i cases.csv -m unet-small --members 5 -o seg.pt      # seg.pt, seg.member1.pt ... seg.member4.pt
      uqseg train -i ph2/images --masks ph2/masks --folds 5 -o seg.pt    # each member leaves one fold out
      uqseg train -i ct/ --masks label.nii.gz -m unet3d-small --patch-size 64 -o seg3d.pt
    """
    import pandas as pd

    from uqseg_cli.io.cases import discover_cases
    from uqseg_cli.io.leftovers import clean_leftovers, refuse_output_over_inputs
    from uqseg_cli.io.lock import OutputLock
    from uqseg_cli.io.streaming import StreamedCase
    from uqseg_cli.io.tables import write_table
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint, member_path, save_checkpoint
    from uqseg_cli.models.registry import model_info
    from uqseg_cli.training.augment import AugmentConfig
    from uqseg_cli.training.loop import TrainOptions, train_members

    info = model_info(model)
    if dropout_at not in ("head", "decoder"):
        raise UqsegError(f"--dropout-at {dropout_at!r}: expected head or decoder")
    if resize not in ("stretch", "letterbox"):
        raise UqsegError(f"--resize {resize!r}: expected stretch or letterbox")
    if modality not in ("auto", "photo", "ct"):
        raise UqsegError(f"--modality {modality!r}: expected auto, photo or ct")
    if folds and members > 1:
        raise UqsegError("--folds K already trains K members; leave --members out")
    n_members = folds or members
    outs = [member_path(output, k) for k in range(n_members)]
    log_path = log_file or output.with_name(f"{output.stem}.log.csv")
    refuse_output_over_inputs(output, [("-i", input), ("--masks", masks)])
    # members of an earlier, larger ensemble: never left next to the new checkpoint for a glob to pick up
    stale = sorted(q for q in output.parent.glob(f"{glob.escape(output.stem)}.member*{output.suffix}") if q not in outs)
    existing = [p for p in outs if p.exists()] + stale
    if existing and not overwrite:
        raise UqsegError(f"{existing[0]}: exists; pass --overwrite to replace it")
    dev = resolve_device(device)
    apply_threads(threads)

    specs = discover_cases(input, masks=masks)
    cases, failed = [], {}
    for spec in specs:
        try:
            # masks are checked against --class-names when given (else: 0/1, 0/255 or small integer labels);
            # 2D images stay on disk (read when drawn: memory does not grow with the cases); volumes are loaded
            names = split_list(class_names, unique=False) if class_names else None
            c = StreamedCase.open(spec, class_names=names)
            cases.append(c if c.ndim == 2 else c.load())
        except InputError as exc:
            failed[spec.id] = str(exc)
            warn(f"case {spec.id}: {exc}")
    if not cases:
        raise InputError(f"{input}: no readable case")
    opts = TrainOptions(
        arch=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dropout=dropout,
        dropout_at=dropout_at,
        pretrained=pretrained,
        input_size=parse_size(input_size, "--input-size", info.dims if info.dims == 3 else 2),
        max_side=max_side,
        resize=resize,
        modality=modality,
        ct_window=parse_window(ct_window),
        patch_size=parse_size(patch_size, "--patch-size", 3),
        patches_per_volume=patches_per_volume,
        halo=halo,
        val_fraction=val_fraction,
        seed=seed,
        members=members,
        folds=folds,
        augment=AugmentConfig(enabled=augment),
        amp=amp,
        class_names=split_list(class_names, unique=False) if class_names else None,
    )
    log(f"training {model} on {len(cases)} case(s), {n_members} member(s), {epochs} epoch(s), device {dev}", quiet)
    rows: list[dict] = []
    # every epoch of every member: a bar with the time left on a terminal, one line per epoch with ETA off it
    prog = Progress(n_members * epochs, "train", quiet=quiet, interval=0.0)

    def on_epoch(r) -> None:
        rows.append(vars(r).copy())
        write_table(pd.DataFrame(rows), log_path)
        vd = "-" if r.val_dice is None else f"{r.val_dice:.4f}"
        prog.update(
            len(rows),
            f"member {r.member} epoch {r.epoch}/{epochs}: loss {r.train_loss:.4f}, val Dice {vd}, "
            f"{r.seconds:.1f} s{' *' if r.best else ''}",
            status="",
        )

    summary = []
    # every member is written beside the old files first; when all are done the main checkpoint records them
    # (names, fingerprints) and they replace the old ones, members first: a failed or killed run changes nothing
    staged: dict[int, Path] = {}
    main = None
    lock = OutputLock(output).__enter__()  # one training per output at a time
    try:
        for o in outs:
            clean_leftovers(o, quiet)
        for trained in _closing(train_members(cases, opts, dev, on_epoch), prog):
            k = trained.meta.member
            if k == 0:
                main = trained
            else:
                staged[k] = save_checkpoint(_staging(outs[k]), trained.model, trained.meta)
            _report_member(trained.meta, outs[k], summary, quiet)
        main.meta.member_files = [o.name for o in outs]
        main.meta.member_fingerprints = [checkpoint_fingerprint(staged[k]) for k in range(1, n_members)]
        staged[0] = save_checkpoint(_staging(outs[0]), main.model, main.meta)
        for k in [*range(1, n_members), 0]:
            os.replace(staged.pop(k), outs[k])
        for q in stale:
            q.unlink(missing_ok=True)
        if stale:
            log(f"removed {len(stale)} member file(s) of the earlier ensemble: {', '.join(q.name for q in stale)}",
                quiet)
    finally:
        for q in staged.values():
            q.unlink(missing_ok=True)
        lock.__exit__(None, None, None)
    log(f"epoch log: {log_path}", quiet)
    if json_out:
        emit_json({"members": summary, "log": str(log_path), "failed": failed})
    if failed:
        typer.echo(f"uqseg: {len(failed)} case(s) could not be read: {', '.join(sorted(failed))}", err=True)
        raise typer.Exit(EXIT_CASE_FAILED)


def _closing(items, prog):
    """Yield from ``items``; close the progress bar when they end (or the loop over them stops)."""
    try:
        yield from items
    finally:
        prog.close()


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _report_member(m, path: Path, summary: list, quiet: bool) -> None:
    summary.append(
        {
            "member": m.member,
            "fold": m.fold,
            "checkpoint": str(path),
            "best_epoch": m.best_epoch,
            "val_dice": m.val_dice,
            "train_cases": len(m.train_case_ids),
            "val_cases": len(m.val_case_ids),
            "input_size": m.preprocessing.input_size,
        }
    )
    vd = "n/a (no validation cases)" if m.val_dice is None else f"{m.val_dice:.4f}"
    log(f"member {m.member}: best epoch {m.best_epoch}, val Dice {vd} -> {path}", quiet)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
