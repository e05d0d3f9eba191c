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


def sample_files_case(
    group,
    case_id: str,
    files: Sequence[Path],
    shape: Sequence[int],
    spacing: Sequence[float],
    num_classes: int,
    *,
    write_array,
    image_affine: np.ndarray | None = None,
    segmentation: np.ndarray | None = None,
    keep_samples: bool = False,
) -> None:
    """Group ``files`` of one case under ``group`` (``/cases/<id>`` of samples.h5): the sums over the external
    predictions ``files`` (one per sample), with every sample too when ``keep_samples``."""
    g = group.create_group(METHOD)
    sink = None
    if keep_samples:
        ds = g.create_dataset("samples", shape=(len(files), num_classes, *shape), dtype=np.float16,
                              chunks=(1, 1, *(min(s, 64) for s in shape)), compression="gzip",
                              compression_opts=4, shuffle=True)

        def sink(t0, index, p, ds=ds):
            ds[(slice(t0, t0 + p.shape[0]), slice(None), *index)] = p.numpy().astype(np.float16)

    res, formats = accumulate_files(
        case_id, files, shape, spacing, num_classes, image_affine=image_affine, sample_sink=sink,
        segmentation=segmentation,
    )
    write_sums(g, res, {"T": res.T, "files": [str(f) for f in files], "formats": formats}, write_array)
