"""Stage ``import``: predict.h5 from another tool's predictions (nnU-Net, MONAI, TotalSegmentator, any label map).

Layout written (per case): the layout of ``predict`` (:data:`LAYOUT`, shared through ``stages.predict``), the
tool's own segmentation as ``segmentation`` when it has one, else the argmax; attributes ``spacing``, ``affine``,
``source``, ``prediction`` (the file read), ``prediction_format``, ``prediction_kind``, ``segmentation_source``
(file or argmax), ``train_case`` (False), ``segmentation_argmax_agreement`` when the tool gave both, and
``affine_mismatch`` when the prediction's affine differs from the image's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.errors import UqsegError
from uqseg_cli.parsing import split_list
from uqseg_cli.progress import warn
from uqseg_cli.stages.base import Report, StageResult, option, resume_config, stage_run
from uqseg_cli.stages.device import apply_threads
from uqseg_cli.stages.predict import LAYOUT as PREDICT_LAYOUT
from uqseg_cli.stages.predict import ImageStageOptions, class_argmax, write_case

STAGE = "predict"  # import writes a predict.h5: every later stage reads it as one
LAYOUT = {
    **PREDICT_LAYOUT,
    "segmentation": "uint8 (*spatial): the tool's own segmentation when it has one, else the argmax",
}


@dataclass(kw_only=True)
class ImportOptions(ImageStageOptions):
    """Options of ``import``; ``source``: the folder of predictions (``--from``); ``num_classes`` and
    ``class_names`` empty: from dataset.json next to the predictions, or the files."""

    source: Path
    kind: str = option("auto", config=True)
    num_classes: int | None = None  # resolved: the config records the class names
    class_names: list[str] = option(factory=list)

    def __post_init__(self) -> None:
        from uqseg_cli.io.predictions import KINDS

        super().__post_init__()
        self.source = Path(self.source)
        self.class_names = split_list(self.class_names)
        if self.kind not in KINDS:
            raise UqsegError(f"--kind {self.kind!r}: choose from {', '.join(KINDS)}")
        if self.num_classes is not None and self.num_classes < 2:
            raise UqsegError(f"--num-classes {self.num_classes}: at least 2 (background and one class)")
        if self.class_names and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise UqsegError(f"--class-names has {len(self.class_names)} names but --num-classes is {self.num_classes}")


def resolve_classes(options: ImportOptions, specs: dict, files: dict) -> tuple[int, list[str]]:
    """The class count K and names, fixed for the whole run: given, named (options, then dataset.json), or read
    from the first case; names that do not fit K become background, class1, ..."""
    from uqseg_cli.io.cases import load_case
    from uqseg_cli.io.geometry import source_affine
    from uqseg_cli.io.nnunet import dataset_class_names
    from uqseg_cli.io.predictions import read_prediction

    names = options.class_names or dataset_class_names(options.source)
    if names is not None and options.num_classes is not None and len(names) != options.num_classes:
        names = None  # dataset.json disagrees with --num-classes (given names that disagree are refused earlier)
    first = sorted(specs)[0]
    K = options.num_classes or (len(names) if names else None)
    if K is None:
        case0 = load_case(specs[first])
        probe = read_prediction(files[first], case0.spatial_shape, kind=options.kind, case_id=first,
                                image_affine=source_affine(case0.source, case0.spacing))
        K = int(probe.probabilities.shape[0])
        names = probe.class_names
    names = [str(n) for n in names] if names and len(names) == K else (
        ["background"] + [f"class{i}" for i in range(1, K)]
    )
    return K, names


def import_case(case_id: str, group, spec, file: Path, K: int, names: list[str], kind: str, dtype,
                mismatched: list[str]) -> None:
    """Read the prediction ``file`` of one case onto its image's grid and write the case into ``group``; a case
    whose prediction has another affine than its image is appended to ``mismatched``."""
    from uqseg_cli.io.cases import load_case
    from uqseg_cli.io.geometry import source_affine
    from uqseg_cli.io.predictions import read_prediction

    case = load_case(spec)
    affine = source_affine(spec.image, case.spacing)
    pred = read_prediction(file, case.spatial_shape, image_affine=affine, kind=kind, num_classes=K,
                           class_names=names, case_id=case_id)
    seg = pred.segmentation
    if seg is not None and int(seg.max(initial=0)) >= K:
        raise UqsegError(f"{file} (case {case_id}): segmentation label {int(seg.max())} >= {K} classes")
    segmentation = seg.astype(np.uint8) if seg is not None else class_argmax(pred.probabilities)
    write_case(group, case, pred.probabilities, segmentation, dtype, affine)
    group.attrs["prediction"] = str(file)
    group.attrs["prediction_format"] = pred.format
    group.attrs["prediction_kind"] = pred.kind
    group.attrs["segmentation_source"] = "file" if seg is not None else "argmax"
    group.attrs["train_case"] = False
    if pred.argmax_agreement is not None:
        group.attrs["segmentation_argmax_agreement"] = pred.argmax_agreement
        if pred.argmax_agreement < 0.99:
            warn(f"{file} (case {case_id}): the tool's segmentation equals the argmax of its "
                 f"probabilities on only {100 * pred.argmax_agreement:.1f} % of voxels: an axis order or "
                 "orientation is off (is the .pkl missing?), or the segmentation was postprocessed")
    if pred.affine_matches is False:
        mismatched.append(case_id)
        group.attrs["affine_mismatch"] = True
        warn(f"{file} (case {case_id}): its affine differs from the image's {spec.image.name}; "
             "the voxels were matched by index — check the overlay")


def run(options: ImportOptions, report: Report | None = None) -> StageResult:
    """Import the predictions in ``options.source`` for every case of ``options.input`` into ``options.output``."""
    from uqseg_cli.io.cases import discover_cases
    from uqseg_cli.io.predictions import match_predictions
    from uqseg_cli.io.runner import run_stage
    from uqseg_cli.io.sharding import resolve_part
    from uqseg_cli.io.store import relpath

    report = report or Report()
    apply_threads(options.threads)
    n_parts, p_id = resolve_part(options.num_parts, options.part_id)
    specs = {s.id: s for s in discover_cases(options.input, masks=options.masks, raters=options.raters)}
    files = match_predictions(options.source, sorted(specs))
    K, names = resolve_classes(options, specs, files)
    config = resume_config(
        options,
        importer="files",
        # a rerun with other images, masks or raters is refused, not mixed (as in predict)
        **options.identity(specs.values()),
        predictions=relpath(options.source, options.output.resolve().parent),
        class_names=names,
    )
    mismatched: list[str] = []
    run = stage_run(
        STAGE, options, report,
        config=config,
        case_ids=sorted(specs),
        parent=None,
        part=(n_parts, p_id),
        inputs=[*options.inputs(), ("--from", options.source)],
    )
    report.log(f"importing {len(specs)} case(s) from {options.source} ({K} classes: {', '.join(names)})")
    result = run_stage(run, lambda cid, group: import_case(
        cid, group, specs[cid], files[cid], K, names, options.kind, options.dtype, mismatched))
    if not result.interrupted:
        report.log(f"wrote {result.out}")
    return StageResult.of(result, classes=names, mismatched_affine=mismatched)
