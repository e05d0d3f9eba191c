"""The stage contract: a typed options object in, a :class:`StageResult` out, nothing about the command line.

Every option that changes a stage's results is a dataclass field declared with ``option(config=...)``; the resume
config (what a resumed run must repeat exactly, stored in the output file) is :func:`resume_config` of the options
and of the values the stage resolves from them (chosen methods, checkpoint fingerprints, ...). Nothing builds that
dict by hand, so a new option cannot be forgotten in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uqseg_cli.errors import UqsegError
from uqseg_cli.progress import error, log

if TYPE_CHECKING:  # the runner brings h5py; listing the commands must stay light
    from uqseg_cli.io.runner import RunResult, StageRun

CONFIG = "uqseg_config"  # field metadata: the key under which the field enters the resume config


def option(default: Any = MISSING, *, config: bool | str = False, factory: Callable[[], Any] | None = None) -> Any:
    """A field of a stage's options; ``config=True`` (or the key to use) puts it in the resume config."""
    meta = {CONFIG: (None if config is True else config)} if config else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def resume_config(*objects: Any, **extra: Any) -> dict:
    """The resume config: every ``option(config=...)`` field of the given dataclasses, in declaration order, then
    ``extra`` (values resolved at run time that are not fields)."""
    out: dict[str, Any] = {}
    for obj in objects:
        for f in dataclasses.fields(obj):
            if CONFIG in f.metadata:
                out[f.metadata[CONFIG] or f.name] = _jsonable(getattr(obj, f.name))
    out.update({k: _jsonable(v) for k, v in extra.items()})
    return out


def input_or_default(path: Path | None, default_name: str, what: str) -> Path:
    """The given input, or the previous stage's default file name in the current folder; refuses a missing one."""
    p = Path(path) if path is not None else Path(default_name)
    if not p.exists():
        hint = "" if path is not None else f" (no -i given, so the default {default_name!r} was tried)"
        raise UqsegError(f"{p}: {what} not found{hint}")
    return p


@dataclass
class Report:
    """Where a stage says what it does: progress lines on stderr unless ``quiet``."""

    quiet: bool = False

    def log(self, msg: str) -> None:
        log(msg, self.quiet)

    def error(self, msg: str) -> None:
        """A failed case (never suppressed)."""
        error(msg)


@dataclass(kw_only=True)
class CaseStageOptions:
    """Options every case-by-case stage shares: input and output files, the part of a split run, the machine."""

    input: Path | None = None  # None: the previous stage's default file name in the current folder
    output: Path
    num_parts: int | None = None  # None: SLURM_ARRAY_TASK_COUNT or 1
    part_id: int | None = None  # None: SLURM_ARRAY_TASK_ID or 0
    overwrite: bool = False
    device: str = "auto"
    threads: int = 0  # 0: the libraries' default

    def __post_init__(self) -> None:
        if self.input is not None:
            self.input = Path(self.input)
        self.output = Path(self.output)


def stage_run(stage: str, options: CaseStageOptions, report: Report, *, config: dict, case_ids: list[str],
              parent: Path | None, part: tuple[int, int], inputs: list | None = None) -> StageRun:
    """The runner's description of one run of ``stage`` (``part`` = (num_parts, part_id) as resolved)."""
    from uqseg_cli.io.runner import StageRun

    return StageRun(
        stage=stage,
        out=options.output,
        config=config,
        case_ids=case_ids,
        parent=parent,
        num_parts=part[0],
        part_id=part[1],
        overwrite=options.overwrite,
        quiet=report.quiet,
        inputs=list(inputs or []),
    )


@dataclass
class StageResult:
    """What a stage run did: the output, cases written now, kept from an earlier run, failed (id → reason),
    whether a signal interrupted it; and ``summary``, the stage's own facts for ``--json`` (methods, T, ...)."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    summary: dict = field(default_factory=dict)

    @classmethod
    def of(cls, result: RunResult, **summary: Any) -> StageResult:
        return cls(
            out=result.out,
            done=list(result.done),
            skipped=list(result.skipped),
            failed=dict(result.failed),
            interrupted=result.interrupted,
            summary=summary,
        )
