"""The `uqseg import` command: its options, parsed into :mod:`uqseg_cli.stages.import_` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    cpu_stage_device,
    finish,
    stage_json,
)


def import_(
    input: Annotated[
        Path,
        typer.Option(
            "-i",
            "--input",
            help="The images the predictions were made on: a file, a folder, case folders, a CSV manifest or an "
            "nnU-Net raw folder (imagesTs/<case>_0000.nii.gz). e.g. -i nnUNet_raw/Dataset001_X/imagesTs",
        ),
    ],
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Folder of predictions by case id: <case>.npz (+ .pkl) from nnUNetv2_predict --save_probabilities, "
            "<case>.nii.gz label/probability maps (MONAI, TotalSegmentator --ml), <case>.png, or <case>/ "
            "folders of structure masks (TotalSegmentator). e.g. --from nnunet_out/",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file. e.g. -o predict.h5")] = Path(
        "predict.h5"
    ),
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="Reference masks by case id, as in `uqseg predict`. e.g. --masks labelsTs/"),
    ] = None,
    raters: Annotated[
        list[str] | None,
        typer.Option("--raters", help="Rater masks (folders or file names inside case folders), repeatable or comma "
                     "list, as in `uqseg predict`."),
    ] = None,
    kind: Annotated[
        Literal["auto", "labels", "probabilities"],
        typer.Option("--kind", help="How one-channel maps read: auto (integers = labels, fractions = foreground "
                     "probability), labels, or probabilities."),
    ] = "auto",
    num_classes: Annotated[
        int | None,
        typer.Option("--num-classes", min=2, help="Classes K incl. background (default: from dataset.json, "
                     "--class-names or the files; label maps: the first case's labels)."),
    ] = None,
    class_names: Annotated[
        list[str] | None,
        typer.Option("--class-names", help="Class names, background first (comma list). Default: dataset.json "
                     "next to the predictions. e.g. --class-names background,kidney"),
    ] = None,
    prob_dtype: Annotated[
        Literal["float16", "float32"],
        typer.Option("--prob-dtype", help="Storage type of the probabilities: float16 or float32."),
    ] = "float16",
    num_parts: NumParts = None,
    part_id: PartId = None,
    overwrite: Overwrite = False,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Evaluate, sample --method files, uncertainty, aggregate, score and export then work on them (same
    layout, resume and sharding as `uqseg predict`).

    nnU-Net v2 probabilities (<case>.npz from --save_probabilities) are in SimpleITK axis order, which is uqseg's;
    their geometry comes from <case>.pkl (or the <case>.nii.gz segmentation), and files saved in another
    orientation (RAS) are flipped back onto the image. Label maps become one-hot probabilities. The tool's own
    segmentation (<case>.nii.gz next to the .npz) is kept as `segmentation` when present, else the argmax.

    Examples:
      uqseg import -i nnUNet_raw/Dataset001_X/imagesTs --from nnunet_pred/ --masks nnUNet_raw/Dataset001_X/labelsTs
      uqseg import -i qubiq_kidney --raters task01_seg01.nii.gz,task01_seg02.nii.gz --from monai_probs/
      uqseg import -i ct/ --from totalseg_out/ --kind labels --num-classes 118 -o predict.h5
      uqseg import -i ph2/images --masks ph2/masks --from probability_pngs/ --kind probabilities
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.import_ import ImportOptions, run

    cpu_stage_device(device, "import", quiet)
    options = ImportOptions(
        input=input, source=source, output=output, masks=masks, raters=raters or [], kind=kind,
        num_classes=num_classes, class_names=class_names or [], prob_dtype=prob_dtype, num_parts=num_parts,
        part_id=part_id, overwrite=overwrite, device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if as_json:
        stage_json(result)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
