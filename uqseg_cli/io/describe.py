"""What a stage file holds, as a JSON-able dict (``uqseg info FILE``): stage, config, lineage, part, cases and
their arrays; the journal of a run still in progress; and whether a path is a checkpoint rather than HDF5.

Checkpoints are described next to their readers: ``models/describe.py`` (seg.pt) and ``quality/describe.py``
(quality.pt, and the choice between the two).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from uqseg_cli.errors import StoreError
from uqseg_cli.io.store import StageFile


def journal_dir(path: Path) -> Path:
    """``<file>.partial``: the journal folder a run keeps until its output is finished."""
    return Path(str(path) + ".partial")


def check_exists(path: Path) -> None:
    """A one-line error unless ``path`` is a file or the journal of an unfinished run."""
    if not path.exists() and not journal_dir(path).is_dir():
        raise StoreError(f"{path}: file not found")


def is_checkpoint(path: Path) -> bool:
    """A torch file (``seg.pt``, ``quality.pt``: a zip archive, or named ``.pt``/``.pth``) rather than HDF5."""
    import zipfile

    return path.is_file() and (path.suffix.lower() in (".pt", ".pth") or zipfile.is_zipfile(path))


def array_list(group: h5py.Group, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    """Every dataset under ``group`` as (path, shape, dtype), sorted by path."""
    out = []
    for name, obj in group.items():
        if isinstance(obj, h5py.Group):
            out.extend(array_list(obj, f"{prefix}{name}/"))
        else:
            out.append((f"{prefix}{name}", tuple(obj.shape), str(obj.dtype)))
    return sorted(out)


def describe_journal(path: Path) -> dict:
    """An unfinished run: how many cases its journal holds."""
    partial = journal_dir(path)
    done = sorted(p.name[:-3] for p in partial.glob("*.h5"))
    return {"file": str(path), "state": "in progress", "journal": str(partial), "cases_journalled": len(done)}


def describe_cases(sf: StageFile) -> dict:
    """Per case of the file (complete and incomplete): whether it is complete and its arrays."""
    cases = {}
    for cid in sf.case_ids + sf.incomplete_ids:
        sf.check_case(cid)  # a crafted file's external links are refused, not followed
        g = sf.h5[f"cases/{cid}"]
        cases[cid] = {
            "complete": bool(g.attrs.get("complete", False)),
            "arrays": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in array_list(g)],
        }
    return cases


def describe_stage_file(path: Path) -> dict:
    """A JSON-able description of a stage file (or of the journal of an unfinished run)."""
    if not path.exists() and journal_dir(path).is_dir():
        return describe_journal(path)
    with StageFile(path) as sf:
        lineage = [{"file": str(anc.path), "stage": anc.stage} for anc in sf.lineage()]
        cases = describe_cases(sf)
        return {
            "file": str(path),
            "schema": sf.h5.attrs.get("schema"),
            "stage": sf.stage,
            "uqseg_version": sf.h5.attrs.get("uqseg_version"),
            "config": sf.config,
            "part": {"num_parts": sf.num_parts, "part_id": sf.part_id},
            "lineage": lineage,
            "cases_total": len(sf.all_case_ids),
            "cases_complete": len(sf.case_ids),
            "cases_incomplete": len(sf.incomplete_ids),
            "failed": sf.failed,
            "cases": cases,
        }


def array_layouts(d: dict) -> dict[tuple, list[str]]:
    """Cases of a description grouped by array layout (names, dtypes, ranks; shapes differ per case)."""
    layouts: dict[tuple, list[str]] = {}
    for cid, c in d["cases"].items():
        layouts.setdefault(tuple((a["name"], a["dtype"], len(a["shape"])) for a in c["arrays"]), []).append(cid)
    return layouts
