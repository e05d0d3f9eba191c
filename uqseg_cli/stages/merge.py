"""Stage ``merge``: join the part files of a stage run split with num_parts/part_id into one file.

Writes the stage file of the parts (same stage, config and layout) holding every case; refuses parts of different
stages or options, overlapping cases, and missing parts or cases (``allow_missing``: recorded as failed).
The merging itself is ``io/merge.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uqseg_cli.io.merge import find_parts, merge_parts
from uqseg_cli.stages.base import Report, StageResult

STAGE = "merge"


@dataclass(kw_only=True)
class MergeOptions:
    """Options of ``merge``: ``parts`` empty = every ``<output stem>.partK-of-N.h5`` next to ``output``."""

    parts: list[Path] = field(default_factory=list)
    output: Path = Path("predict.h5")
    allow_missing: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.parts = [Path(p) for p in self.parts]
        self.output = Path(self.output)


def run(options: MergeOptions, report: Report | None = None) -> StageResult:
    """Merge the parts into ``options.output``; ``summary`` is io.merge's (out, stage, parts, cases, missing)."""
    report = report or Report()
    paths = list(options.parts) or find_parts(options.output)
    summary = merge_parts(paths, options.output, allow_missing=options.allow_missing, overwrite=options.overwrite)
    report.log(
        f"merged {summary['parts']} part(s), {summary['cases']} case(s) of stage {summary['stage']} into "
        f"{options.output}"
    )
    # the merged cases are not listed: a merge writes nothing new, and a missing case is no failure of this run
    return StageResult(out=options.output, summary=summary)
