"""The `uqseg predict` command: its options, parsed into :mod:`uqseg_cli.stages.predict` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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
    finish,
    stage_json,
)


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
        Literal["float16", "float32"],
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
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.predict import PredictOptions, run

    options = PredictOptions(
        input=input, checkpoint=checkpoint, output=output, masks=masks, raters=raters or [], prob_dtype=prob_dtype,
        out_of_fold=out_of_fold, nan_policy=nan_policy, batch_size=batch_size, amp=amp, num_parts=num_parts,
        part_id=part_id, overwrite=overwrite, device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if json_out:
        stage_json(result)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
