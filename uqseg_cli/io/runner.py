"""The crash-safe stage runner every HDF5-writing stage uses (DESIGN §3).

Each finished case is journalled as its own small HDF5 file in ``<out>.partial/`` (written under a temporary
name, closed, fsynced, then ``os.replace``d), so a kill at any moment costs only the case in flight. When every
case of the part has been tried, the journal is consolidated into ``<out>`` (again temporary name + ``os.replace``)
and the journal removed. HDF5 is never trusted to survive a kill while it grows.

Measured choice: consolidation copies the per-case groups (``h5py`` object copy keeps compressed chunks as they
are); see docs/benchmarks.md for its cost on the LiTS volume.

Write-behind (``run_stage(..., compute=...)``): the stage's per-case work is split in two, ``compute(case_id)`` (the
model; in the calling thread) and ``process(case_id, group, payload)`` (the HDF5 writes, gzip, the journal file and
its fsync; in one writer thread), so case ``i`` is compressed and journalled while case ``i + 1`` runs through the
model. The same calls write the same bytes; the journal protocol is unchanged (each case file is written under its
temporary name, fsynced and ``os.replace``d by the writer), at most one case is being written at a time, and the
runner waits for it before it returns or re-raises an interrupt, so a kill costs at most the case being written and
the case being computed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from uqseg_cli import signals
from uqseg_cli.errors import DiskFullError, StoreError, UqsegError, check_room, disk_full_message, is_disk_full
from uqseg_cli.io.atomic import fsync_file
from uqseg_cli.io.leftovers import clean_leftovers, refuse_output_over_inputs
from uqseg_cli.io.lock import OutputLock
from uqseg_cli.io.sharding import part_path, select_part
from uqseg_cli.io.store import StageFile, config_diff, config_json, relpath, write_root
from uqseg_cli.io.untrusted import UntrustedFileError, check_self_contained, check_tree
from uqseg_cli.progress import Progress, log, warn

META = "meta.json"
#: a write-behind case whose payload (``payload.nbytes``) is larger is written before the next case computes, so at
#: most one such case is held (CT volumes); smaller ones (2D photos, ~1 MB) overlap with the next case's model
WRITE_BEHIND_MAX_BYTES = 256 << 20
REPLACES = "replaces-output"  # marker: this journal belongs to an --overwrite run that replaces <out> at the end


@dataclass
class StageRun:
    """What one stage run writes. ``case_ids`` are all cases of the run (every part); ``config`` holds every
    option that changes results (resume with a different one is refused)."""

    stage: str
    out: Path
    config: dict
    case_ids: list[str]
    parent: Path | None = None
    num_parts: int = 1
    part_id: int = 0
    overwrite: bool = False
    quiet: bool = False
    inputs: list[tuple[str, Path | None]] = field(default_factory=list)  # other inputs the output must not be


@dataclass
class RunResult:
    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def _write_case(tmp: Path, cid: str, process: Callable[[str, h5py.Group], None]) -> None:
    """Build the case's journal file in memory (HDF5 core driver) and write its bytes with plain Python I/O.

    HDF5 never writes to the disk here, so a full disk (or a ``ulimit -f``) is a clean ``OSError`` instead of an
    HDF5 write failure, which leaves h5py objects that fail again on deallocation and can crash the process.
    Costs one compressed copy of the case in memory.
    """
    f = h5py.File(f"<journal {cid}>", "w", driver="core", backing_store=False)
    try:
        g = f.create_group(f"cases/{cid}")
        process(cid, g)
        g.attrs["complete"] = True
        del g
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    with open(tmp, "wb") as fh:
        fh.write(image)
        fh.flush()
        os.fsync(fh.fileno())


def _journal_ok(path: Path, case_id: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            check_self_contained(f, path)
            return bool(f[f"cases/{case_id}"].attrs.get("complete", False))
    except Exception:
        return False


def _move_aside(path: Path, why: str) -> Path:
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, dest)
    warn(f"{path}: {why}; moved aside to {dest.name}")
    return dest


def _error_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return msg if isinstance(exc, UqsegError) else f"{type(exc).__name__}: {msg}"


def _reset_journal(partial: Path, config: dict, replaces: bool = False) -> None:
    """A fresh journal folder whose meta.json records the config it belongs to."""
    partial.mkdir(parents=True, exist_ok=True)
    tmp = partial / f".{META}.tmp"
    tmp.write_text(config_json(config))
    os.replace(tmp, partial / META)
    if replaces:
        (partial / REPLACES).write_text("this journal replaces the output when it completes (--overwrite)\n")


def _disk_full(where: Path, exc: BaseException, kept: int, partial: Path) -> DiskFullError:
    return DiskFullError(
        f"{disk_full_message(where, exc)}; {kept} finished case(s) kept in {partial} — free space and rerun "
        "the same command to resume"
    )


def _payload_bytes(payload: Any) -> int:
    try:
        return int(getattr(payload, "nbytes", 0))
    except (TypeError, ValueError):
        return 0


def run_stage(run: StageRun, process: Callable[..., None],
              compute: Callable[[str], Any] | None = None) -> RunResult:
    """Process every case of this part not yet done, journal each, and consolidate into the output file.

    ``process(case_id, group)`` writes the case's arrays into ``group`` (``/cases/<id>`` of its journal file).
    With ``compute``, ``payload = compute(case_id)`` runs first in this thread and ``process(case_id, group,
    payload)`` in the writer thread while the next case computes (write-behind, see the module docstring); a
    payload with ``nbytes`` over :data:`WRITE_BEHIND_MAX_BYTES` is written before the next case computes.
    Either raises for a failed case (reported; the stage goes on). ``KeyboardInterrupt`` (SIGINT, or SIGTERM through
    `uqseg_cli.signals`) is re-raised after the case in flight is discarded; what is journalled stays for the next
    run. A full disk stops the run with `DiskFullError` (journal intact). With ``overwrite`` the old output stays
    in place until the new one is complete and replaces it in one ``os.replace``.
    """
    out = part_path(run.out, run.num_parts, run.part_id)
    mine = select_part(run.case_ids, run.num_parts, run.part_id)
    result = RunResult(out)
    parent_rel, parent_fp = "", ""
    guarded = list(run.inputs)
    if run.parent is not None:
        with StageFile(run.parent) as pf:
            parent_fp = pf.fingerprint
            # every ancestor must still be the file this one was made from: checked once here, before any case
            # (and again whenever a case reads through the lineage)
            for i, sf in enumerate(pf.lineage()):
                guarded.append(("-i" if i == 0 else f"an ancestor of -i ({sf.stage})", sf.path))
        parent_rel = relpath(run.parent, out.parent)
    refuse_output_over_inputs(out, guarded)
    # the parent's identity is part of what the results depend on
    config = dict(run.config, stage=run.stage, parent_fingerprint=parent_fp)
    partial = Path(str(out) + ".partial")

    with OutputLock(out):
        clean_leftovers(out, run.quiet)
        replacing = run.overwrite
        if partial.exists():
            try:
                old_cfg = json.loads((partial / META).read_text())
            except (OSError, ValueError):
                _move_aside(partial, "unreadable journal of an interrupted run")
            else:
                diff = config_diff(old_cfg, json.loads(config_json(config)))
                journal_replaces = (partial / REPLACES).exists()
                if run.overwrite and (diff or not journal_replaces):
                    shutil.rmtree(partial)  # an interrupted run's cases, not an output the user had
                elif diff:
                    raise StoreError(
                        f"{out}: an interrupted run with different options exists in {partial.name} "
                        f"({'; '.join(diff)}); rerun with the same options to resume, or pass --overwrite"
                    )
                elif journal_replaces and not run.overwrite:
                    replacing = True
                    log(f"{out}: resuming an interrupted --overwrite run; it replaces {out.name} when done", run.quiet)
        already: set[str] = set()
        if out.exists() and not replacing:
            try:
                with StageFile(out) as sf:
                    old = dict(
                        sf.config,
                        stage=sf.stage,
                        parent_fingerprint=sf.h5.attrs.get("parent_fingerprint", ""),
                    )
                    old_ids = set(sf.case_ids)
            except StoreError as exc:
                raise StoreError(f"{exc}; pass --overwrite to replace it") from None
            diff = config_diff(json.loads(config_json(old)), json.loads(config_json(config)))
            if diff:
                raise StoreError(
                    f"{out}: exists with different options ({'; '.join(diff)}); pass --overwrite to replace it"
                )
            already = old_ids & set(mine)
        if not partial.exists():
            if already == set(mine) and not replacing:
                result.skipped = sorted(already)
                log(f"{out}: all {len(mine)} case(s) already complete, nothing to do", run.quiet)
                return result
            _reset_journal(partial, config, replaces=replacing)

        journalled: set[str] = set()
        for p in sorted(partial.glob("*.h5")):
            cid = p.name[: -len(".h5")]
            if cid in mine and _journal_ok(p, cid):
                journalled.add(cid)
            else:
                _move_aside(p, "incomplete or unreadable case file")
        for p in partial.glob("*.tmp"):
            p.unlink()  # a case in flight when the last run died
        result.skipped = sorted(journalled | already)
        todo = [c for c in mine if c not in journalled and c not in already]
        if result.skipped:
            log(f"{out}: resuming, {len(result.skipped)} of {len(mine)} case(s) already done", run.quiet)

        progress = Progress(len(todo), run.stage, run.quiet)

        def journal(cid: str, write: Callable[[str, h5py.Group], None]) -> None:
            """Write one case's journal file (in the writer thread with write-behind)."""
            tmp = partial / f"{cid}.h5.tmp"
            try:
                _write_case(tmp, cid, write)
                os.replace(tmp, partial / f"{cid}.h5")
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        def failed(cid: str, exc: Exception) -> None:
            if is_disk_full(exc):
                raise _disk_full(partial / f"{cid}.h5.tmp", exc, len(journalled), partial) from None
            if isinstance(exc, UntrustedFileError):
                raise exc  # a crafted input file: refuse the run, not just the case
            result.failed[cid] = _error_line(exc)
            progress.advance(cid, "FAILED")
            warn(f"case {cid}: {result.failed[cid]}")
            if os.environ.get("UQSEG_DEBUG") == "1":
                traceback.print_exception(exc)

        def finished(cid: str) -> None:
            journalled.add(cid)
            result.done.append(cid)
            progress.advance(cid)

        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uqseg-writer") if compute else None
        pending: tuple[str, Future] | None = None

        def collect() -> None:
            """Wait for the case being written (through further interrupts: it ends in milliseconds) and record
            it."""
            nonlocal pending
            if pending is None:
                return
            cid, fut = pending
            pending = None
            stopped = False
            while True:
                try:
                    exc = fut.exception()
                    break
                except KeyboardInterrupt:
                    stopped = True
            if exc is None:
                finished(cid)
            elif isinstance(exc, Exception):
                failed(cid, exc)
            if stopped:
                raise KeyboardInterrupt

        def interrupted() -> None:
            result.interrupted = True
            signals.handled()
            try:
                collect()
            except (KeyboardInterrupt, UqsegError):
                pass
            warn(f"interrupted; {len(journalled)} complete case(s) kept in {partial} — rerun to resume")

        try:
            for cid in todo:
                try:
                    signals.check()  # a Ctrl-C whose exception was lost in a finaliser stops the run here
                    if writer is None:
                        try:
                            journal(cid, process)
                        except Exception as exc:
                            failed(cid, exc)
                        else:
                            finished(cid)
                        continue
                    try:
                        payload = compute(cid)  # type: ignore[misc]
                    except Exception as exc:
                        collect()  # the case before it first, so that the lines stay in order
                        failed(cid, exc)
                        continue
                    collect()
                    pending = (cid, writer.submit(journal, cid, lambda c, g, p=payload: process(c, g, p)))
                    if _payload_bytes(payload) > WRITE_BEHIND_MAX_BYTES:
                        collect()
                    del payload
                except KeyboardInterrupt:
                    interrupted()
                    raise
            try:
                collect()
                signals.check()
            except KeyboardInterrupt:
                interrupted()
                raise
        finally:
            if writer is not None:
                if pending is not None:  # an error left a case being written: let it end before returning
                    pending[1].exception()
                writer.shutdown(wait=True)
            progress.close()

        if replacing and out.exists() and not journalled and result.failed:
            warn(f"{out}: no case succeeded; the existing output is left as it was (--overwrite replaces it only "
                 "with a run that produced cases)")
            return result
        try:
            _consolidate(
                run, out, partial, config, sorted(journalled), already, result.failed, parent_rel, parent_fp
            )
        except DiskFullError as exc:
            raise DiskFullError(f"{exc}; {len(journalled)} finished case(s) kept in {partial} — free space and "
                                "rerun the same command to resume") from None
        except Exception as exc:
            if is_disk_full(exc):
                raise _disk_full(out, exc, len(journalled), partial) from None
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return result


def _consolidate(
    run: StageRun,
    out: Path,
    partial: Path,
    config: dict,
    journalled: list[str],
    already: set[str],
    failed: dict[str, str],
    parent_rel: str,
    parent_fp: str,
) -> None:
    """Write ``<out>`` from the journal (and the old ``<out>``'s cases) via a temporary file and ``os.replace``."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    done = sorted(set(journalled) | already)
    check_room(out, sum((partial / f"{c}.h5").stat().st_size for c in journalled)
                + (out.stat().st_size if already and out.exists() else 0))
    try:
        with h5py.File(tmp, "w") as dst:
            write_root(
                dst,
                stage=run.stage,
                config=run.config,
                parent=parent_rel,
                parent_fp=parent_fp,
                case_ids=run.case_ids,
                num_parts=run.num_parts,
                part_id=run.part_id,
                failed=failed,
                done_ids=done,
            )
            cases = dst.create_group("cases")
            src_old = h5py.File(out, "r") if already else None
            try:
                for cid in done:
                    if cid in set(journalled):
                        with h5py.File(partial / f"{cid}.h5", "r") as src:
                            src.copy(src[f"cases/{cid}"], cases, name=cid)
                    else:
                        check_tree(src_old[f"cases/{cid}"], out)
                        src_old.copy(src_old[f"cases/{cid}"], cases, name=cid)
            finally:
                if src_old is not None:
                    src_old.close()
        fsync_file(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
