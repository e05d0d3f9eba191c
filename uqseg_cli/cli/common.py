"""Options and helpers shared by the subcommands (the CLI stays thin: no maths here)."""

from __future__ import annotations

import os
from pathlib import Path
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


def resolve_device(name: str):
    """`auto` → cuda if available else cpu; validates `cuda[:N]` against the machine."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UqsegError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UqsegError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise UqsegError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")


def default_input(path: Path | None, default_name: str, what: str) -> Path:
    """The given input, or the previous stage's default file name in the current folder."""
    p = Path(path) if path is not None else Path(default_name)
    if not p.exists():
        hint = "" if path is not None else f" (no -i given, so the default {default_name!r} was tried)"
        raise UqsegError(f"{p}: {what} not found{hint}")
    return p


def finish(result) -> None:
    """Exit 1 if any case failed (after the output was written), 130/143 if interrupted by SIGINT/SIGTERM."""
    if getattr(result, "interrupted", False):
        from uqseg_cli import signals

        raise typer.Exit(signals.exit_code())
    if result.failed:
        typer.echo(f"uqseg: {len(result.failed)} case(s) failed: {', '.join(sorted(result.failed))}", err=True)
        raise typer.Exit(EXIT_CASE_FAILED)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def plan_from_parent(parent, num_parts: int | None, part_id: int | None) -> tuple[list[str], int, int]:
    """Cases and part for a stage that reads the ``StageFile`` ``parent``.

    A part file (``predict.part1-of-4.h5``) hands its part on: the next stage writes ``samples.part1-of-4.h5``
    over the same cases, so an array job can run every stage on its part and merge at the end. Otherwise the
    complete cases of the parent are split by ``--num-parts/--part-id`` (or the SLURM variables).
    """
    from uqseg_cli.io.sharding import resolve_part

    if parent.num_parts > 1:
        n, k = parent.num_parts, parent.part_id
        if (num_parts is not None and num_parts != n) or (part_id is not None and part_id != k):
            raise UqsegError(
                f"{parent.path}: is part {k} of {n}; it cannot be split again as part {part_id} of {num_parts} "
                f"(merge the parts first with `uqseg merge`, or leave --num-parts/--part-id out)"
            )
        return list(parent.all_case_ids), n, k
    n, k = resolve_part(num_parts, part_id)
    return list(parent.case_ids), n, k
