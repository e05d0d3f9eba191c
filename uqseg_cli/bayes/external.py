"""External samples: predictions another tool made (e.g. the five nnU-Net fold models), one folder per sample,
streamed into the same running sums as the built-in samplers (``uqseg sample --method files --from a/,b/,...``).

Sample t of a case is the file of that case in folder t (``<case>.npz`` + ``.pkl``, NIfTI or PNG maps; read by
``io/predictions.py`` onto the grid and orientation of the case in ``predict.h5``). Files hold probabilities, not
logits, and often as float16, where a confident voxel's minority classes are exactly 0; their log would be -inf
and make the EPKL infinite. Each sample is therefore floored at ``PROB_FLOOR`` and renormalised before its log is
taken (recorded in the config as ``prob_floor``; mean probabilities change by less than K × the floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from uqseg_cli.bayes.accumulator import AccumulatedSums, SampleAccumulator
from uqseg_cli.io.predictions import read_prediction

METHOD = "files"
PROB_FLOOR = 1e-6


def log_probabilities(p: np.ndarray, floor: float = PROB_FLOOR) -> np.ndarray:
    """``log`` of probabilities ``(K, *spatial)`` floored at ``floor`` and renormalised over K (float32)."""
    q = np.maximum(np.asarray(p, dtype=np.float32), np.float32(floor)) if floor > 0 else np.asarray(p, np.float32)
    q = q / q.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore"):
        return np.log(q)


def accumulate_files(
    case_id: str,
    files: Sequence[Path],
    shape: Sequence[int],
    spacing: Sequence[float],
    num_classes: int,
    *,
    image_affine: np.ndarray | None = None,
    kind: str = "auto",
    floor: float = PROB_FLOOR,
    sample_sink=None,
    segmentation: np.ndarray | None = None,
) -> tuple[AccumulatedSums, list[str]]:
    """Running sums over the T = ``len(files)`` external predictions of one case; also each file's format.
    ``segmentation`` (the final one, from predict.h5) adds the per-sample overlaps of the agreement features."""
    acc = SampleAccumulator(num_classes, shape, len(files), spacing, sample_sink=sample_sink,
                            segmentation=segmentation)
    formats = []
    for t, path in enumerate(files):
        pred = read_prediction(path, shape, image_affine=image_affine, kind=kind, num_classes=num_classes,
                               case_id=case_id)
        acc.add(torch.from_numpy(log_probabilities(pred.probabilities, floor))[None], t)
        formats.append(pred.format)
    return acc.result(), formats


def write_sums(group, res: AccumulatedSums, attrs: dict, write_array) -> None:
    """The samples.h5 layout of one method (docs/sampling.md) under ``group``."""
    write_array(group, "sum_p", res.sum_p)
    write_array(group, "sum_logp", res.sum_logp)
    write_array(group, "sum_entropy", res.sum_entropy)
    write_array(group, "volumes", res.volumes)
    write_array(group, "soft_volumes", res.soft_volumes)
    if res.votes is not None:
        write_array(group, "votes", res.votes)
    if res.overlap_volumes is not None:
        write_array(group, "overlap_volumes", res.overlap_volumes)
    for k, v in attrs.items():
        group.attrs[k] = v


def sample_files_stage(
    parent: Path,
    sources: Sequence[str],
    output: Path,
    *,
    keep_samples: bool = False,
    num_parts: int | None = None,
    part_id: int | None = None,
    overwrite: bool = False,
    quiet: bool = False,
):
    """``uqseg sample --method files``: one samples.h5 group ``files`` per case of ``parent`` (predict.h5)."""
    from uqseg_cli.errors import InputError, UqsegError
    from uqseg_cli.io.predictions import match_predictions
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.sharding import plan_from_parent
    from uqseg_cli.io.store import StageFile, relpath, write_array
    from uqseg_cli.progress import log

    folders = [Path(s) for s in sources]
    if not folders:
        raise UqsegError("--method files needs --from FOLDER[,FOLDER...] (one folder of predictions per sample)")
    with StageFile(parent, expect_stage="predict") as pf:
        case_ids, n_parts, p_id = plan_from_parent(pf, num_parts, part_id)
        found = [match_predictions(f, case_ids) for f in folders]
        config = {
            "methods": [METHOD],
            "T": {METHOD: len(folders)},
            "sources": [relpath(f, Path(output).resolve().parent) for f in folders],
            "prob_floor": PROB_FLOOR,
            "keep_samples": bool(keep_samples),
            "class_names": list(pf.config.get("class_names", [])),
            "agreement": 1,  # votes + overlap_volumes, as the checkpoint samplers write them
        }

        def process(case_id: str, group) -> None:
            cv = pf.case(case_id)
            probs = cv.dataset("probabilities")
            K, shape = int(probs.shape[0]), tuple(int(s) for s in probs.shape[1:])
            affine = cv.attr("affine", None)
            spacing = cv.spacing
            if len(spacing) != len(shape):
                raise InputError(f"{parent}: case {case_id}: spacing {spacing} does not match the grid {shape}")
            group.attrs["spacing"] = list(spacing)
            g = group.create_group(METHOD)
            sink = None
            if keep_samples:
                ds = g.create_dataset("samples", shape=(len(folders), K, *shape), dtype=np.float16,
                                      chunks=(1, 1, *(min(s, 64) for s in shape)), compression="gzip",
                                      compression_opts=4, shuffle=True)

                def sink(t0, index, p, ds=ds):
                    ds[(slice(t0, t0 + p.shape[0]), slice(None), *index)] = p.numpy().astype(np.float16)

            res, formats = accumulate_files(
                case_id, [f[case_id] for f in found], shape, spacing, K,
                image_affine=None if affine is None else np.asarray(affine), sample_sink=sink,
                segmentation=cv.get("segmentation") if cv.has("segmentation") else None,
            )
            write_sums(g, res, {"T": res.T, "files": [str(f[case_id]) for f in found], "formats": formats},
                       write_array)

        run = StageRun(stage="sample", out=output, config=config, case_ids=case_ids, parent=parent,
                       num_parts=n_parts, part_id=p_id, overwrite=overwrite, quiet=quiet)
        log(f"sampling files (T={len(folders)}: {', '.join(str(f) for f in folders)}) for {len(case_ids)} case(s)",
            quiet)
        result = run_stage(run, process)
    log(f"wrote {result.out}", quiet)
    return result
