"""Join the part files of one sharded stage into one file (``uqseg merge``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py

from uqseg_cli.errors import StoreError
from uqseg_cli.io.atomic import atomic_write
from uqseg_cli.io.sharding import parse_part, part_path
from uqseg_cli.io.store import StageFile, config_diff, relpath, write_root


def find_parts(out: Path) -> list[Path]:
    """The part files ``<stem>.partK-of-N.h5`` next to ``out`` (all N found must agree)."""
    out = Path(out)
    found = sorted(out.parent.glob(f"{out.stem}.part*-of-*{out.suffix}"))
    return [p for p in found if (pp := parse_part(p)) is not None and pp[0] == out.stem]


def _merged_parent(parts: list[StageFile], out: Path) -> tuple[str, str]:
    """Parent path (relative to ``out``) and fingerprint for the merged file."""
    parents = {p.parent_path.resolve() if p.parent_path else None for p in parts}
    if parents == {None}:
        return "", ""
    fps = {str(p.h5.attrs.get("parent_fingerprint", "")) for p in parts}
    if len(parents) == 1:
        (pp,) = parents
        if len(fps) != 1:
            raise StoreError(f"the parts were made from different versions of {pp} (its fingerprint differs); "
                             "rerun the parts on the same file")
        if pp.exists():
            with StageFile(pp) as cur:
                if cur.fingerprint != next(iter(fps)):
                    raise StoreError(f"{pp}: has changed since the parts were made from it; rerun the parts")
        return relpath(pp, out.parent), parts[0].h5.attrs.get("parent_fingerprint", "")
    # parts made from part files of the parent stage: the merged parent must exist and hold every case
    stems = {parse_part(p)[0] if p and parse_part(p) else None for p in parents}
    if None in stems or len(stems) != 1 or len({p.parent for p in parents}) != 1:
        raise StoreError("the parts were made from different parent files; merge them stage by stage")
    pp = next(iter(parents))
    merged = pp.with_name(f"{stems.pop()}{pp.suffix}")
    if not merged.exists():
        raise StoreError(f"the parts' parents are part files; merge those first into {merged} (uqseg merge)")
    with StageFile(merged) as m:
        fp = m.fingerprint
        missing = set().union(*(set(p.case_ids) for p in parts)) - set(m.case_ids)
        for p in parts:  # each part's own parent must still be what it was made from, and of the merged run
            with StageFile(p.parent_path) as own:
                if own.fingerprint != str(p.h5.attrs.get("parent_fingerprint", "")):
                    raise StoreError(f"{p.path}: its parent {own.path} has changed since; rerun this part")
                diff = config_diff(m.config, own.config)
                if diff:
                    raise StoreError(f"{own.path}: was made with other options or inputs than {merged} "
                                     f"({'; '.join(diff)}); the parts do not belong to it")
    if missing:
        raise StoreError(f"{merged}: lacks case(s) {', '.join(sorted(missing)[:5])} present in the parts")
    return relpath(merged, out.parent), fp


def merge_parts(paths: Sequence[Path], out: Path, allow_missing: bool = False, overwrite: bool = False) -> dict:
    """Merge part files into ``out``. Refuses mixed stages/configs, overlapping cases, absent parts and
    missing cases (unless ``allow_missing``: then they are recorded as failed). Returns a summary dict."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: exists; pass --overwrite to replace it")
    if not paths:
        raise StoreError(f"no part files found for {out} (expected {part_path(out, 2, 0).name} and so on)")
    parts = [StageFile(p) for p in paths]
    try:
        first = parts[0]
        for p in parts[1:]:
            if p.stage != first.stage:
                raise StoreError(f"{p.path}: stage {p.stage!r} differs from {first.path} ({first.stage!r})")
            diff = config_diff(first.config, p.config)
            if diff:
                raise StoreError(f"{p.path}: options differ from {first.path}: {'; '.join(diff)}")
        ns = {p.num_parts for p in parts}
        if len(ns) != 1:
            raise StoreError(f"the files come from splits into different numbers of parts ({sorted(ns)})")
        n = ns.pop()
        ids_seen: dict[str, Path] = {}
        for p in parts:
            for cid in p.case_ids:
                if cid in ids_seen:
                    raise StoreError(f"case {cid} is in both {ids_seen[cid]} and {p.path}: overlapping parts")
                ids_seen[cid] = p.path
        have = sorted({p.part_id for p in parts})
        if len(have) != len(parts):
            raise StoreError("two files claim the same part id")
        absent = sorted(set(range(n)) - set(have))
        all_ids = sorted(set().union(*(set(p.all_case_ids) for p in parts)))
        missing = sorted(set(all_ids) - set(ids_seen))
        failed: dict[str, str] = {}
        for p in parts:
            failed.update(p.failed)
        if (absent or missing) and not allow_missing:
            what = []
            if absent:
                what.append(f"part(s) {', '.join(map(str, absent))} of {n} not found")
            if missing:
                what.append(
                    f"{len(missing)} case(s) missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                )
            raise StoreError(f"cannot merge into {out}: {'; '.join(what)} (rerun those parts, or --allow-missing)")
        for cid in missing:
            failed.setdefault(cid, "missing from the merged parts")
        parent_rel, parent_fp = _merged_parent(parts, out)

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as dst:
                write_root(
                    dst,
                    stage=first.stage,
                    config=first.config,
                    parent=parent_rel,
                    parent_fp=parent_fp,
                    case_ids=all_ids,
                    num_parts=1,
                    part_id=0,
                    failed=failed,
                    done_ids=sorted(ids_seen),
                )
                cases = dst.create_group("cases")
                for p in parts:
                    for cid in p.case_ids:
                        p.check_case(cid)  # never copy what another file holds
                        p.h5.copy(p.h5[f"cases/{cid}"], cases, name=cid)

        atomic_write(out, write)
        return {"out": str(out), "stage": first.stage, "parts": len(parts), "cases": len(ids_seen), "missing": missing}
    finally:
        for p in parts:
            p.close()
