"""Split a run over SLURM array jobs (or any scheduler): ``--num-parts N --part-id K`` takes ``cases[K::N]``."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from uqseg_cli.errors import UqsegError

PART_RE = re.compile(r"^(?P<stem>.+)\.part(?P<k>\d+)-of-(?P<n>\d+)$")


def resolve_part(num_parts: int | None, part_id: int | None) -> tuple[int, int]:
    """Explicit options win; otherwise ``SLURM_ARRAY_TASK_COUNT``/``SLURM_ARRAY_TASK_ID``; otherwise (1, 0)."""
    env = os.environ
    if num_parts is None:
        num_parts = (
            int(env["SLURM_ARRAY_TASK_COUNT"]) if env.get("SLURM_ARRAY_TASK_COUNT", "").isdigit() else 1
        )
    if part_id is None:
        if env.get("SLURM_ARRAY_TASK_ID", "").isdigit() and num_parts > 1:
            # SLURM ids start at SLURM_ARRAY_TASK_MIN (often 0 or 1): make them 0-based
            lo = int(env["SLURM_ARRAY_TASK_MIN"]) if env.get("SLURM_ARRAY_TASK_MIN", "").isdigit() else 0
            part_id = int(env["SLURM_ARRAY_TASK_ID"]) - lo
        else:
            part_id = 0
    if num_parts < 1:
        raise UqsegError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise UqsegError(f"--part-id must be in 0..{num_parts - 1}, got {part_id}")
    return num_parts, part_id


def select_part(case_ids: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """The cases of one part: ``sorted(case_ids)[part_id::num_parts]``."""
    return sorted(case_ids)[part_id::num_parts]


def part_path(out: Path, num_parts: int, part_id: int) -> Path:
    """``predict.h5`` → ``predict.part0-of-4.h5`` (unchanged for a single part)."""
    out = Path(out)
    if num_parts == 1:
        return out
    return out.with_name(f"{out.stem}.part{part_id}-of-{num_parts}{out.suffix}")


def parse_part(path: Path) -> tuple[str, int, int] | None:
    """``predict.part1-of-4.h5`` → ``("predict", 1, 4)``; None for a non-part file name."""
    m = PART_RE.match(Path(path).stem)
    return (m["stem"], int(m["k"]), int(m["n"])) if m else None


def plan_from_parent(parent, num_parts: int | None, part_id: int | None) -> tuple[list[str], int, int]:
    """Cases and part for a stage that reads the ``StageFile`` ``parent``.

    A part file (``predict.part1-of-4.h5``) hands its part on: the next stage writes ``samples.part1-of-4.h5``
    over the same cases, so an array job can run every stage on its part and merge at the end. Otherwise the
    complete cases of the parent are split by ``--num-parts/--part-id`` (or the SLURM variables).
    """
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
