"""Stage ``uncertainty``: voxel-wise uncertainty maps of every case from the running sums of samples.h5.

Layout written (per case, per method ``<m>``): ``cases/<id>/<m>/<measure>`` float32/float16 maps over the spatial
grid, ``cases/<id>/<m>/mean_segmentation`` (argmax of the mean prediction); attributes ``spacing`` (case) and ``T``
(method).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqseg_cli.bayes.measures import EPKL_PAIRS, MEASURES
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.prefetch import Prefetcher
from uqseg_cli.io.runner import run_stage
from uqseg_cli.io.sharding import plan_from_parent, select_part
from uqseg_cli.io.store import StageFile, write_array
from uqseg_cli.stages.base import (
    CaseStageOptions,
    Report,
    StageResult,
    input_or_default,
    option,
    resume_config,
    stage_run,
)
from uqseg_cli.stages.device import apply_threads

STAGE = "uncertainty"
PARENT = ("sample", "samples.h5", "samples file")  # the stage it reads, its default file name, what to call it
LAYOUT = {
    "<method>/<measure>": "float32 or float16 (*spatial): one uncertainty map per measure",
    "<method>/mean_segmentation": "uint8 (*spatial): argmax of the mean prediction",
}
DTYPES = ("float32", "float16")
SUMS = ("sum_p", "sum_logp", "sum_entropy")
PREFETCH_BYTES = 256 << 20  # sums larger than this (big CT volumes) are read slab by slab, not ahead


@dataclass(kw_only=True)
class UncertaintyOptions(CaseStageOptions):
    """Options of ``uncertainty``; ``methods`` empty = every method samples.h5 holds, ``measures`` empty = all."""

    output: Path = Path("uncertainty.h5")
    methods: list[str] = option(factory=list)  # resolved against the file: resolve_methods
    measures: list[str] = option(factory=list, config=True)
    epkl_pairs: str = option("all", config=True)
    dtype: str = option("float32", config=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epkl_pairs not in EPKL_PAIRS:
            raise UqsegError(f"--epkl-pairs {self.epkl_pairs!r}: choose all or distinct")
        if self.dtype not in DTYPES:
            raise UqsegError(f"--dtype {self.dtype!r}: choose float32 or float16")
        asked = list(dict.fromkeys(self.measures)) or list(MEASURES)
        bad = [m for m in asked if m not in MEASURES]
        if bad:
            raise UqsegError(f"--measure {','.join(bad)}: unknown; choose from {', '.join(MEASURES)}")
        # canonical order, so a resume with the same lists in another order is the same run
        self.measures = [m for m in MEASURES if m in asked]


def resolve_methods(sf: StageFile, options: UncertaintyOptions) -> list[str]:
    """The methods to compute, in the order samples.h5 holds them; refuses ones it does not hold."""
    available = list(sf.config.get("methods", []))
    chosen = list(dict.fromkeys(options.methods)) or available
    missing = [m for m in chosen if m not in available]
    if missing:
        raise UqsegError(
            f"--method {','.join(missing)}: not in {sf.path} (it holds {', '.join(available) or 'no method'})"
        )
    chosen = [m for m in available if m in chosen]
    if options.epkl_pairs == "distinct" and "epkl" in options.measures:
        small = [m for m in chosen if int(sf.config.get("T", {}).get(m, 2)) < 2]
        if small:
            raise UqsegError(f"--epkl-pairs distinct needs T >= 2 samples; {', '.join(small)} has T = 1")
    return chosen


def read_sums(sf: StageFile, case_id: str, methods: list[str]) -> dict:
    """The sums of each method of one case, read whole when small (else None: read slab by slab later)."""
    sf.case(case_id)  # the file's checks of the case (no external links or datasets)
    g = sf.h5[f"cases/{case_id}"]  # this file only: the worker never opens the lineage
    out = {}
    for method in methods:
        if not all(f"{method}/{n}" in g for n in SUMS):
            continue
        ds = [g[f"{method}/{n}"] for n in SUMS]
        small = sum(d.size * d.dtype.itemsize for d in ds) <= PREFETCH_BYTES
        out[method] = [d[()] for d in ds] if small else None
    return out


def uncertainty_case(sf: StageFile, case_id: str, group, methods: list[str], options: UncertaintyOptions,
                     ahead: dict) -> None:
    """Write the maps of one case into ``group`` (``ahead``: sums already read by :func:`read_sums`)."""
    from uqseg_cli.bayes.maps import maps_by_slab

    cv = sf.case(case_id)
    group.attrs["spacing"] = list(cv.spacing)
    out_dtype = np.float16 if options.dtype == "float16" else np.float32
    for method in methods:
        if not cv.has(f"{method}/sum_p"):
            raise InputError(f"{sf.path}: case {case_id} has no {method} samples")
        T = int(cv.dataset(f"{method}/sum_p").parent.attrs["T"])
        sums = ahead.get(method) or [cv.dataset(f"{method}/{n}") for n in SUMS]
        maps = maps_by_slab(*sums, T, options.measures, pairs=options.epkl_pairs, out_dtype=out_dtype)
        g = group.create_group(method)
        g.attrs["T"] = T
        for name, arr in maps.items():
            write_array(g, name, arr)


def run(options: UncertaintyOptions, report: Report | None = None) -> StageResult:
    """Compute the maps of every case of ``options.input`` (a samples.h5) into ``options.output``."""
    report = report or Report()
    apply_threads(options.threads, torch_too=False)
    parent = input_or_default(options.input, *PARENT[1:])
    with StageFile(parent, expect_stage=PARENT[0]) as sf:
        methods = resolve_methods(sf, options)
        case_ids, n_parts, p_id = plan_from_parent(sf, options.num_parts, options.part_id)
        # the next case's sums are read in a thread while this one computes and writes (io/prefetch.py)
        prefetch = Prefetcher(lambda cid: read_sums(sf, cid, methods), select_part(case_ids, n_parts, p_id))
        run = stage_run(
            STAGE, options, report,
            config=resume_config(options, methods=methods),
            case_ids=case_ids,
            parent=parent,
            part=(n_parts, p_id),
        )
        report.log(f"{len(options.measures)} measure(s) x {', '.join(methods)} for {len(case_ids)} case(s)")
        with prefetch:
            result = run_stage(
                run, lambda cid, group: uncertainty_case(sf, cid, group, methods, options, prefetch.get(cid))
            )
    report.log(f"wrote {result.out}")
    return StageResult.of(result, stage=STAGE, methods=methods, measures=options.measures)
