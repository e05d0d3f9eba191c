"""Stage ``train``: fit a segmentation network (or K ensemble members / K fold members) on images with masks.

Files written: ``output`` (member 0, the main checkpoint: it records every member's file name and fingerprint),
``<stem>.member<k><suffix>`` for members k > 0 (:func:`~uqseg_cli.models.checkpoint.member_path`), and the epoch
log CSV (``<stem>.log.csv`` unless ``log`` is given; one row per epoch of every member, rewritten after each).

There is no resume config: what changes the weights is :class:`~uqseg_cli.training.loop.TrainOptions`, recorded
whole in every checkpoint's ``training`` meta (``TrainOptions.to_dict()``); :class:`TrainStageOptions` adds only
where the data is, where the checkpoints go and the machine.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.progress import warn
from uqseg_cli.stages.base import Report, StageResult
from uqseg_cli.stages.device import apply_threads, resolve_device
from uqseg_cli.training.loop import TrainOptions

STAGE = "train"
DROPOUT_AT = ("head", "decoder")
RESIZE = ("stretch", "letterbox")
MODALITIES = ("auto", "photo", "ct")


@dataclass(kw_only=True)
class TrainStageOptions:
    """Options of ``train``: the images (``input``) and ``masks``, the checkpoint ``output`` (members k > 0 next
    to it), the epoch ``log`` (None: ``<stem>.log.csv``), ``training`` (everything that changes the weights,
    including ``members`` and ``folds``), and the machine."""

    input: Path
    masks: Path | None = None
    output: Path = Path("seg.pt")
    log: Path | None = None
    training: TrainOptions = field(default_factory=TrainOptions)
    overwrite: bool = False
    device: str = "auto"
    threads: int = 0  # 0: the libraries' default

    def __post_init__(self) -> None:
        from uqseg_cli.models.registry import model_info

        self.input = Path(self.input)
        self.masks = Path(self.masks) if self.masks is not None else None
        self.output = Path(self.output)
        self.log = Path(self.log) if self.log is not None else None
        t = self.training
        model_info(t.arch)  # an unknown model is refused before anything is read
        if t.dropout_at not in DROPOUT_AT:
            raise UqsegError(f"--dropout-at {t.dropout_at!r}: expected head or decoder")
        if t.resize not in RESIZE:
            raise UqsegError(f"--resize {t.resize!r}: expected stretch or letterbox")
        if t.modality not in MODALITIES:
            raise UqsegError(f"--modality {t.modality!r}: expected auto, photo or ct")
        if t.folds and t.members > 1:
            raise UqsegError("--folds K already trains K members; leave --members out")

    @property
    def n_members(self) -> int:
        return self.training.folds or self.training.members

    @property
    def member_paths(self) -> list[Path]:
        """The checkpoint of every member: ``output`` for member 0, ``<stem>.member<k><suffix>`` for k > 0."""
        from uqseg_cli.models.checkpoint import member_path

        return [member_path(self.output, k) for k in range(self.n_members)]

    @property
    def log_path(self) -> Path:
        return self.log or self.output.with_name(f"{self.output.stem}.log.csv")


def stale_members(output: Path, outs: list[Path]) -> list[Path]:
    """Member files of an earlier, larger ensemble next to ``output``: never left for a glob to pick up."""
    return sorted(q for q in output.parent.glob(f"{glob.escape(output.stem)}.member*{output.suffix}") if q not in outs)


def read_cases(specs, class_names: list[str] | None) -> tuple[list, dict[str, str]]:
    """The readable training cases and the failed ones (id → reason, each warned about). Masks are checked
    against ``class_names`` when given (else: 0/1, 0/255 or small integer labels); 2D images stay on disk (read
    when drawn: memory does not grow with the cases); volumes are loaded."""
    from uqseg_cli.io.streaming import StreamedCase

    cases, failed = [], {}
    for spec in specs:
        try:
            c = StreamedCase.open(spec, class_names=class_names)
            cases.append(c if c.ndim == 2 else c.load())
        except InputError as exc:
            failed[spec.id] = str(exc)
            warn(f"case {spec.id}: {exc}")
    return cases, failed


class EpochLogger:
    """``on_epoch`` of :func:`~uqseg_cli.training.loop.train_members`: appends the epoch to the log CSV (rewritten
    whole, atomically) and moves the progress bar (time left on a terminal, one line per epoch off it)."""

    def __init__(self, path: Path, epochs: int, n_members: int, quiet: bool):
        from uqseg_cli.progress import Progress

        self.path, self.epochs, self.rows = path, epochs, []
        self.progress = Progress(n_members * epochs, "train", quiet=quiet, interval=0.0)

    def __call__(self, r) -> None:
        import pandas as pd

        from uqseg_cli.io.tables import write_table

        self.rows.append(vars(r).copy())
        write_table(pd.DataFrame(self.rows), self.path)
        vd = "-" if r.val_dice is None else f"{r.val_dice:.4f}"
        self.progress.update(
            len(self.rows),
            f"member {r.member} epoch {r.epoch}/{self.epochs}: loss {r.train_loss:.4f}, val Dice {vd}, "
            f"{r.seconds:.1f} s{' *' if r.best else ''}",
            status="",
        )


def closing(items: Iterable, progress):
    """Yield from ``items``; close the progress bar when they end (or the loop over them stops)."""
    try:
        yield from items
    finally:
        progress.close()


def save_members(trained: Iterable, outs: list[Path], on_member: Callable[[object, Path], None]) -> None:
    """Write the members of one training into ``outs`` together: a failed or killed run changes no checkpoint.

    Each member k > 0 is saved under its temporary name next to ``outs[k]`` (io/atomic.py: ``.<name>.tmp-<pid>``,
    removed by a later run once this process is gone) as soon as it is trained; when all are done the main
    checkpoint records their names and fingerprints, is saved the same way, and they replace the old files,
    members first, the main checkpoint last. ``on_member(meta, path)`` is called as each member is trained.
    """
    from uqseg_cli.io.atomic import temporary_name
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint, save_checkpoint

    staged: dict[int, Path] = {}
    main = None
    try:
        for member in trained:
            k = member.meta.member
            if k == 0:
                main = member
            else:
                staged[k] = save_checkpoint(temporary_name(outs[k]), member.model, member.meta)
            on_member(member.meta, outs[k])
        main.meta.member_files = [o.name for o in outs]
        main.meta.member_fingerprints = [checkpoint_fingerprint(staged[k]) for k in range(1, len(outs))]
        staged[0] = save_checkpoint(temporary_name(outs[0]), main.model, main.meta)
        for k in [*range(1, len(outs)), 0]:
            os.replace(staged.pop(k), outs[k])
    finally:
        for q in staged.values():
            q.unlink(missing_ok=True)


def member_summary(m, path: Path) -> dict:
    """One member's line of the ``--json`` summary."""
    return {
        "member": m.member,
        "fold": m.fold,
        "checkpoint": str(path),
        "best_epoch": m.best_epoch,
        "val_dice": m.val_dice,
        "train_cases": len(m.train_case_ids),
        "val_cases": len(m.val_case_ids),
        "input_size": m.preprocessing.input_size,
    }


def report_member(m, path: Path, summary: list[dict], report: Report) -> None:
    summary.append(member_summary(m, path))
    vd = "n/a (no validation cases)" if m.val_dice is None else f"{m.val_dice:.4f}"
    report.log(f"member {m.member}: best epoch {m.best_epoch}, val Dice {vd} -> {path}")


def run(options: TrainStageOptions, report: Report | None = None) -> StageResult:
    """Train every member on the cases of ``options.input``; ``failed``: cases that could not be read (the others
    were trained on); ``summary``: ``members`` (one dict each) and ``log`` (the epoch log CSV)."""
    from uqseg_cli.io.cases import discover_cases
    from uqseg_cli.io.leftovers import clean_leftovers, refuse_output_over_inputs
    from uqseg_cli.io.lock import OutputLock
    from uqseg_cli.training.loop import train_members

    report = report or Report()
    apply_threads(options.threads)
    opts, output, outs = options.training, options.output, options.member_paths
    refuse_output_over_inputs(output, [("-i", options.input), ("--masks", options.masks)])
    stale = stale_members(output, outs)
    existing = [p for p in outs if p.exists()] + stale
    if existing and not options.overwrite:
        raise UqsegError(f"{existing[0]}: exists; pass --overwrite to replace it")
    dev = resolve_device(options.device)
    cases, failed = read_cases(discover_cases(options.input, masks=options.masks), opts.class_names)
    if not cases:
        raise InputError(f"{options.input}: no readable case")
    report.log(
        f"training {opts.arch} on {len(cases)} case(s), {len(outs)} member(s), {opts.epochs} epoch(s), device {dev}"
    )
    on_epoch = EpochLogger(options.log_path, opts.epochs, len(outs), report.quiet)
    summary: list[dict] = []
    with OutputLock(output):  # one training per output at a time
        for o in outs:
            clean_leftovers(o, report.quiet)
        save_members(closing(train_members(cases, opts, dev, on_epoch), on_epoch.progress), outs,
                     lambda meta, path: report_member(meta, path, summary, report))
        for q in stale:
            q.unlink(missing_ok=True)
        if stale:
            report.log(f"removed {len(stale)} member file(s) of the earlier ensemble: "
                       f"{', '.join(q.name for q in stale)}")
    report.log(f"epoch log: {options.log_path}")
    return StageResult(out=output, failed=failed, summary={"members": summary, "log": str(options.log_path)})
