"""Stage ``sample --method files``: another tool's predictions (one folder per sample, e.g. the five nnU-Net folds)
as the samples of every case of predict.h5, streamed into the same running sums as the checkpoint samplers.

Layout written (per case): ``cases/<id>/files/{sum_p, sum_logp, sum_entropy, volumes, soft_volumes, votes,
overlap_volumes}`` as for a checkpoint method (``stages/sample.py``), ``samples`` with ``keep_samples``;
attributes ``spacing`` (case), ``T``, ``files`` and ``formats`` (method). The maths and the reading of the files
are ``bayes/external.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.bayes.external import METHOD, PROB_FLOOR, sample_files_case
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.predictions import match_predictions
from uqseg_cli.io.runner import run_stage
from uqseg_cli.io.sharding import plan_from_parent
from uqseg_cli.io.store import StageFile, relpath, write_array
from uqseg_cli.stages.base import (
    CaseStageOptions,
    Report,
    StageResult,
    input_or_default,
    option,
    resume_config,
    stage_run,
)

STAGE = "sample"
PARENT = ("predict", "predict.h5", "predict file")
LAYOUT = {
    "files/<sum>": "sum_p, sum_logp float32 (K, *spatial), sum_entropy float32 (*spatial)",
    "files/<volumes>": "volumes, soft_volumes, overlap_volumes float64 (T, K) in ml",
    "files/votes": "uint16 (K, *spatial): samples whose argmax is class k",
    "files/samples": "float16 (T, K, *spatial): every sample, only with keep_samples",
}


@dataclass(kw_only=True)
class SampleFilesOptions(CaseStageOptions):
    """Options of ``sample --method files``: ``sources`` = one folder of predictions per sample."""

    output: Path = Path("samples.h5")
    sources: list[str] = option(factory=list)  # → sources (relative to the output's folder) and T
    keep_samples: bool = option(False, config=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sources = [str(s) for s in self.sources]
        self.keep_samples = bool(self.keep_samples)
        if not self.sources:
            raise UqsegError("--method files needs --from FOLDER[,FOLDER...] (one folder of predictions per sample)")


def files_config(options: SampleFilesOptions, class_names: list[str]) -> dict:
    """The resume config of a files run."""
    folders = [Path(s) for s in options.sources]
    return resume_config(
        options,
        methods=[METHOD],
        T={METHOD: len(folders)},
        sources=[relpath(f, options.output.resolve().parent) for f in folders],
        prob_floor=PROB_FLOOR,
        class_names=list(class_names),
        agreement=1,  # votes + overlap_volumes, as the checkpoint samplers write them
    )


def files_case(pf: StageFile, case_id: str, group, found: list[dict[str, Path]], keep_samples: bool) -> None:
    """Write group ``files`` of one case: sample t is the prediction ``found[t][case_id]``, on the case's grid."""
    cv = pf.case(case_id)
    probs = cv.dataset("probabilities")
    K, shape = int(probs.shape[0]), tuple(int(s) for s in probs.shape[1:])
    affine = cv.attr("affine", None)
    spacing = cv.spacing
    if len(spacing) != len(shape):
        raise InputError(f"{pf.path}: case {case_id}: spacing {spacing} does not match the grid {shape}")
    group.attrs["spacing"] = list(spacing)
    sample_files_case(
        group, case_id, [f[case_id] for f in found], shape, spacing, K, write_array=write_array,
        image_affine=None if affine is None else np.asarray(affine),
        segmentation=cv.get("segmentation") if cv.has("segmentation") else None, keep_samples=keep_samples,
    )


def run(options: SampleFilesOptions, report: Report | None = None) -> StageResult:
    """One samples.h5 group ``files`` per case of ``options.input`` (a predict.h5) into ``options.output``."""
    report = report or Report()
    parent = input_or_default(options.input, *PARENT[1:])
    folders = [Path(s) for s in options.sources]
    with StageFile(parent, expect_stage=PARENT[0]) as pf:
        case_ids, n_parts, p_id = plan_from_parent(pf, options.num_parts, options.part_id)
        found = [match_predictions(f, case_ids) for f in folders]
        run = stage_run(
            STAGE, options, report,
            config=files_config(options, pf.config.get("class_names", [])),
            case_ids=case_ids,
            parent=parent,
            part=(n_parts, p_id),
        )
        report.log(f"sampling files (T={len(folders)}: {', '.join(str(f) for f in folders)}) for {len(case_ids)} "
                   "case(s)")
        result = run_stage(run, lambda cid, group: files_case(pf, cid, group, found, options.keep_samples))
    report.log(f"wrote {result.out}")
    return StageResult.of(result, stage=STAGE, methods=[METHOD], T={METHOD: len(folders)})
