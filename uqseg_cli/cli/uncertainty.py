"""`uqseg uncertainty`: voxel-wise uncertainty maps from the running sums of samples.h5."""

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
    default_input,
    finish,
    plan_from_parent,
    stage_json,
)
from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.progress import log

DTYPES = ("float32", "float16")
PREFETCH_BYTES = 256 << 20  # sums larger than this (big CT volumes) are read slab by slab, not ahead


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return list(dict.fromkeys(out))


def uncertainty(
    input: Annotated[
        Path | None, typer.Option("-i", "--input", help="samples.h5 from `uqseg sample` [default: ./samples.h5].")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file, e.g. -o uncertainty.h5.")] = Path(
        "uncertainty.h5"
    ),
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", help="Methods of samples.h5 (comma list or repeat) [default: all it holds]."),
    ] = None,
    measures: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            help="confidence, entropy, expected_entropy, mutual_information, epkl (comma list or repeat) "
            "[default: all]. e.g. --measure entropy,mutual_information",
        ),
    ] = None,
    epkl_pairs: Annotated[
        str,
        typer.Option(
            "--epkl-pairs",
            help="EPKL as the mean KL over all T² ordered sample pairs, or over the T(T-1) distinct pairs "
            "(= all × T/(T-1)); recorded in the file.",
        ),
    ] = "all",
    dtype: Annotated[str, typer.Option("--dtype", help="Storage dtype of the maps: float32 or float16.")] = "float32",
    num_parts: NumParts = None,
    part_id: PartId = None,
    device: CpuDevice = "auto",
    threads: Threads = 0,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Compute confidence, entropy, expected entropy, mutual information and EPKL maps per case and method.

    Exact for any number of samples T: everything follows from the sums Σp, Σlog p, ΣH[p] in samples.h5.
    Also writes <method>/mean_segmentation (argmax of the mean prediction).

    Examples:
      uqseg uncertainty                                        # samples.h5 -> uncertainty.h5
      uqseg uncertainty -i samples.h5 --method tta --measure entropy,mutual_information -o tta_unc.h5
      uqseg uncertainty --epkl-pairs distinct --dtype float16
    """
    import numpy as np

    from uqseg_cli.bayes.maps import maps_by_slab
    from uqseg_cli.io.prefetch import Prefetcher
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.sharding import select_part
    from uqseg_cli.io.store import StageFile, write_array
    from uqseg_cli.measures import EPKL_PAIRS, MEASURES

    cpu_stage_device(device, "uncertainty", quiet)
    apply_threads(threads, torch_too=False)
    if epkl_pairs not in EPKL_PAIRS:
        raise UqsegError(f"--epkl-pairs {epkl_pairs!r}: choose all or distinct")
    if dtype not in DTYPES:
        raise UqsegError(f"--dtype {dtype!r}: choose float32 or float16")
    chosen_measures = _split(measures) or list(MEASURES)
    bad = [m for m in chosen_measures if m not in MEASURES]
    if bad:
        raise UqsegError(f"--measure {','.join(bad)}: unknown; choose from {', '.join(MEASURES)}")
    # canonical order (methods: the file's), so a resume with the same lists in another order is the same run
    chosen_measures = [m for m in MEASURES if m in chosen_measures]
    parent = default_input(input, "samples.h5", "samples file")
    with StageFile(parent, expect_stage="sample") as sf:
        available = list(sf.config.get("methods", []))
        chosen = _split(methods) or available
        missing = [m for m in chosen if m not in available]
        if missing:
            raise UqsegError(
                f"--method {','.join(missing)}: not in {parent} (it holds {', '.join(available) or 'no method'})"
            )
        chosen = [m for m in available if m in chosen]
        if epkl_pairs == "distinct" and "epkl" in chosen_measures:
            small = [m for m in chosen if int(sf.config.get("T", {}).get(m, 2)) < 2]
            if small:
                raise UqsegError(f"--epkl-pairs distinct needs T >= 2 samples; {', '.join(small)} has T = 1")
        case_ids, n_parts, p_id = plan_from_parent(sf, num_parts, part_id)
        out_dtype = np.float16 if dtype == "float16" else np.float32
        names = ("sum_p", "sum_logp", "sum_entropy")

        def load(case_id: str) -> dict:
            """The sums of each method, read whole when small (else None: read slab by slab in process)."""
            sf.case(case_id)  # the file's checks of the case (no external links or datasets)
            g = sf.h5[f"cases/{case_id}"]  # this file only: the worker never opens the lineage
            out = {}
            for method in chosen:
                if not all(f"{method}/{n}" in g for n in names):
                    continue
                ds = [g[f"{method}/{n}"] for n in names]
                small = sum(d.size * d.dtype.itemsize for d in ds) <= PREFETCH_BYTES
                out[method] = [d[()] for d in ds] if small else None
            return out

        # the next case's sums are read in a thread while this one computes and writes (io/prefetch.py)
        prefetch = Prefetcher(load, select_part(case_ids, n_parts, p_id))

        def process(case_id: str, group) -> None:
            ahead = prefetch.get(case_id)
            cv = sf.case(case_id)
            group.attrs["spacing"] = list(cv.spacing)
            for method in chosen:
                if not cv.has(f"{method}/sum_p"):
                    raise InputError(f"{parent}: case {case_id} has no {method} samples")
                ds = cv.dataset(f"{method}/sum_p")
                T = int(ds.parent.attrs["T"])
                sums = ahead.get(method) or [cv.dataset(f"{method}/{n}") for n in names]
                maps = maps_by_slab(
                    *sums,
                    T,
                    chosen_measures,
                    pairs=epkl_pairs,
                    out_dtype=out_dtype,
                )
                g = group.create_group(method)
                g.attrs["T"] = T
                for name, arr in maps.items():
                    write_array(g, name, arr)

        config = {"methods": chosen, "measures": chosen_measures, "epkl_pairs": epkl_pairs, "dtype": dtype}
        run = StageRun(
            stage="uncertainty",
            out=output,
            config=config,
            case_ids=case_ids,
            parent=parent,
            num_parts=n_parts,
            part_id=p_id,
            overwrite=overwrite,
            quiet=quiet,
        )
        log(f"{len(chosen_measures)} measure(s) x {', '.join(chosen)} for {len(case_ids)} case(s)", quiet)
        with prefetch:
            result = run_stage(run, process)
    log(f"wrote {result.out}", quiet)
    if json_out:
        stage_json(result, stage="uncertainty", methods=chosen, measures=chosen_measures)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("uncertainty")(uncertainty)
