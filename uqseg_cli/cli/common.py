"""Options and helpers shared by the subcommands (the CLI stays thin: no maths here)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from uqseg_cli.errors import EXIT_CASE_FAILED, UqsegError

Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images (or slices/patches) per forward pass.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed; every per-case draw derives from (seed, case, method).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Start over, replacing an existing output.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
NumParts = Annotated[
    int | None,
    typer.Option("--num-parts", min=1, help="Split the cases into N parts (default: SLURM_ARRAY_TASK_COUNT or 1)."),
]
PartId = Annotated[
    int | None,
    typer.Option("--part-id", min=0, help="Which part (0-based) this run does (default: SLURM_ARRAY_TASK_ID or 0)."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
CpuDevice = Annotated[
    str,
    typer.Option("--device", help="auto, cpu, cuda or cuda:N; accepted like on every stage, but this one computes "
                 "with NumPy on the CPU."),
]
Threads = Annotated[
    int,
    typer.Option(
        "--threads",
        min=0,
        help="CPU threads for torch and NumPy/BLAS (0 = the libraries' default: one per core; on a machine shared "
        "with other jobs 1 is often faster). e.g. --threads 1",
    ),
]


def cpu_stage_device(name: str, stage: str, quiet: bool = False) -> None:
    """``--device`` of a stage that computes with NumPy on the CPU: checked like everywhere (so one command line
    fits every stage), and a CUDA choice is said to change nothing here."""
    from uqseg_cli.progress import log

    name = name.strip().lower()
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise UqsegError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        log(f"{stage} computes with NumPy on the CPU; --device {name} changes nothing here", quiet)


def emit_json(doc: object) -> None:
    """``--json``: one JSON document on stdout (indented, keys sorted, NaN/inf as null so it is valid JSON)."""
    import json
    import math
    import sys

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    sys.stdout.write(json.dumps(clean(doc), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def stage_json(result, **extra) -> None:
    """``--json`` of a case-by-case stage: output file, cases written now / kept from an earlier run, failures."""
    emit_json(
        {
            "output": str(result.out),
            "cases_done": len(result.done),
            "cases_resumed": len(result.skipped),
            "failed": dict(result.failed),
            "interrupted": bool(getattr(result, "interrupted", False)),
            **getattr(result, "summary", {}),
            **extra,
        }
    )


def finish(result=None, *, failed=None) -> None:
    """Exit 130/143 if the run was interrupted by SIGINT/SIGTERM, else 1 if any case failed (the output was written
    first): ``result`` is a stage result (``.failed``, ``.interrupted``), or pass ``failed`` (case id → reason)."""
    if getattr(result, "interrupted", False):
        from uqseg_cli import signals

        raise typer.Exit(signals.exit_code())
    failed = dict(failed if failed is not None else getattr(result, "failed", {}) or {})
    if failed:
        typer.echo(f"uqseg: {len(failed)} case(s) failed: {', '.join(sorted(failed))}", err=True)
        raise typer.Exit(EXIT_CASE_FAILED)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}
