"""`uqseg import`: predict.h5 from another tool's predictions (nnU-Net, MONAI, TotalSegmentator, any label map)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import (
    CpuDevice,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Threads,
    apply_threads,
    cpu_stage_device,
    finish,
    stage_json,
)
from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import log, warn


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
        str,
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
        str, typer.Option("--prob-dtype", help="Storage type of the probabilities: float16 or float32.")
    ] = "float16",
    num_parts: NumParts = None,
    part_id: PartId = None,
    overwrite: Overwrite = False,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    quiet: Quiet = False,
    as_json: JsonOut = False,
) -> None:
    """Build predict.h5 from predictions another tool made, so that evaluate, sample --method files,
    uncertainty, aggregate, score and export work on them (same layout, resume and sharding as `uqseg predict`).

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
    import numpy as np

    from uqseg_cli.cli.predict import class_argmax
    from uqseg_cli.io.cases import discover_cases, load_case, split_paths
    from uqseg_cli.io.fingerprint import input_identity
    from uqseg_cli.io.geometry import source_affine
    from uqseg_cli.io.nnunet import dataset_class_names
    from uqseg_cli.io.predictions import KINDS, match_predictions, read_prediction
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.sharding import resolve_part
    from uqseg_cli.io.store import relpath, write_array

    cpu_stage_device(device, "import", quiet)
    apply_threads(threads)
    if prob_dtype not in ("float16", "float32"):
        raise UqsegError(f"--prob-dtype {prob_dtype!r}: expected float16 or float32")
    if kind not in KINDS:
        raise UqsegError(f"--kind {kind!r}: choose from {', '.join(KINDS)}")
    n_parts, p_id = resolve_part(num_parts, part_id)
    specs = {s.id: s for s in discover_cases(input, masks=masks, raters=raters)}
    files = match_predictions(source, sorted(specs))
    names = split_list(class_names) or None
    if names is None:
        names = dataset_class_names(source)
    if names is not None and num_classes is not None and len(names) != num_classes:
        if class_names:
            raise UqsegError(f"--class-names has {len(names)} names but --num-classes is {num_classes}")
        names = None
    # the class count is fixed for the whole run: given, named, or read from the first case
    first = sorted(specs)[0]
    K = num_classes or (len(names) if names else None)
    if K is None:
        case0 = load_case(specs[first])
        probe = read_prediction(files[first], case0.spatial_shape, kind=kind, case_id=first,
                                image_affine=source_affine(case0.source, case0.spacing))
        K = int(probe.probabilities.shape[0])
        names = probe.class_names
    names = [str(n) for n in names] if names and len(names) == K else (
        ["background"] + [f"class{i}" for i in range(1, K)]
    )
    dtype = np.float16 if prob_dtype == "float16" else np.float32
    config = {
        "importer": "files",
        # a rerun with other images, masks or raters is refused, not mixed (as in predict)
        **input_identity(list(specs.values()), input, output, masks, split_paths(raters)),
        "predictions": relpath(source, output.resolve().parent),
        "kind": kind,
        "class_names": names,
        "prob_dtype": prob_dtype,
    }
    mismatched: list[str] = []

    def process(case_id: str, group) -> None:
        spec = specs[case_id]
        case = load_case(spec)
        affine = source_affine(spec.image, case.spacing)
        pred = read_prediction(files[case_id], case.spatial_shape, image_affine=affine, kind=kind, num_classes=K,
                               class_names=names, case_id=case_id)
        seg = pred.segmentation
        if seg is not None and int(seg.max(initial=0)) >= K:
            raise UqsegError(f"{files[case_id]} (case {case_id}): segmentation label {int(seg.max())} >= {K} classes")
        write_array(group, "image", case.image)
        write_array(group, "probabilities", pred.probabilities, dtype=dtype)
        write_array(group, "segmentation", seg.astype(np.uint8) if seg is not None else
                    class_argmax(pred.probabilities))
        if case.mask is not None:
            write_array(group, "reference", case.mask.astype(np.uint8))
        if case.raters is not None:
            write_array(group, "raters", case.raters.astype(np.uint8))
        group.attrs["spacing"] = [float(s) for s in case.spacing]
        group.attrs["affine"] = np.asarray(affine, dtype=np.float64)
        group.attrs["source"] = case.source
        group.attrs["prediction"] = str(files[case_id])
        group.attrs["prediction_format"] = pred.format
        group.attrs["prediction_kind"] = pred.kind
        group.attrs["segmentation_source"] = "file" if seg is not None else "argmax"
        group.attrs["train_case"] = False
        if pred.argmax_agreement is not None:
            group.attrs["segmentation_argmax_agreement"] = pred.argmax_agreement
            if pred.argmax_agreement < 0.99:
                warn(f"{files[case_id]} (case {case_id}): the tool's segmentation equals the argmax of its "
                     f"probabilities on only {100 * pred.argmax_agreement:.1f} % of voxels: an axis order or "
                     "orientation is off (is the .pkl missing?), or the segmentation was postprocessed")
        if pred.affine_matches is False:
            mismatched.append(case_id)
            group.attrs["affine_mismatch"] = True
            warn(f"{files[case_id]} (case {case_id}): its affine differs from the image's {spec.image.name}; "
                 "the voxels were matched by index — check the overlay")

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
                ("--from", source)],
    )
    log(f"importing {len(specs)} case(s) from {source} ({K} classes: {', '.join(names)})", quiet)
    result = run_stage(run, process)
    if not result.interrupted:
        log(f"wrote {result.out}", quiet)
    if as_json:
        stage_json(result, classes=names, mismatched_affine=mismatched)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
