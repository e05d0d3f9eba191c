"""`uqseg info FILE`: what a stage file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import h5py
import typer

from uqseg_cli.cli.common import JsonOut
from uqseg_cli.errors import StoreError
from uqseg_cli.io.store import StageFile


def _arrays(group: h5py.Group, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    out = []
    for name, obj in group.items():
        if isinstance(obj, h5py.Group):
            out.extend(_arrays(obj, f"{prefix}{name}/"))
        else:
            out.append((f"{prefix}{name}", tuple(obj.shape), str(obj.dtype)))
    return sorted(out)


def describe(path: Path) -> dict:
    """A JSON-able description of a stage file (or of the journal of an unfinished run)."""
    partial = Path(str(path) + ".partial")
    if not path.exists() and partial.is_dir():
        done = sorted(p.name[:-3] for p in partial.glob("*.h5"))
        return {"file": str(path), "state": "in progress", "journal": str(partial), "cases_journalled": len(done)}
    with StageFile(path) as sf:
        lineage = []
        for anc in sf.lineage():
            lineage.append({"file": str(anc.path), "stage": anc.stage})
        cases = {}
        for cid in sf.case_ids + sf.incomplete_ids:
            sf.check_case(cid)  # a crafted file's external links are refused, not followed
            g = sf.h5[f"cases/{cid}"]
            cases[cid] = {
                "complete": bool(g.attrs.get("complete", False)),
                "arrays": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in _arrays(g)],
            }
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


def _print(d: dict) -> None:
    if d.get("state") == "in progress":
        typer.echo(f"{d['file']}: run in progress or interrupted; {d['cases_journalled']} case(s) in {d['journal']}")
        return
    typer.echo(f"file:     {d['file']}")
    typer.echo(f"stage:    {d['stage']}   (schema {d['schema']}, uqseg {d['uqseg_version']})")
    if d["part"]["num_parts"] > 1:
        typer.echo(f"part:     {d['part']['part_id']} of {d['part']['num_parts']}")
    typer.echo("lineage:  " + " <- ".join(f"{x['stage']} ({x['file']})" for x in d["lineage"]))
    typer.echo(
        f"cases:    {d['cases_complete']} complete, {d['cases_incomplete']} incomplete, {len(d['failed'])} failed"
        f" (of {d['cases_total']} in the run)"
    )
    for cid, why in d["failed"].items():
        typer.echo(f"  failed {cid}: {why}")
    typer.echo("config:")
    for k, v in sorted(d["config"].items()):
        typer.echo(f"  {k}: {json.dumps(v)}")
    # group cases by array layout (shapes differ per case, names and dtypes usually not)
    layouts: dict[tuple, list[str]] = {}
    for cid, c in d["cases"].items():
        layouts.setdefault(tuple((a["name"], a["dtype"], len(a["shape"])) for a in c["arrays"]), []).append(cid)
    for layout, ids in layouts.items():
        first = d["cases"][ids[0]]
        more = f" (and {len(ids) - 1} more with the same arrays)" if len(ids) > 1 else ""
        typer.echo(f"arrays of {ids[0]}{more}:")
        for a in first["arrays"]:
            typer.echo(f"  {a['name']:<28} {str(tuple(a['shape'])):<24} {a['dtype']}")
        del layout


def info(
    file: Annotated[Path, typer.Argument(help="A uqseg HDF5 file (predict.h5, samples.h5, ...).")],
    as_json: JsonOut = False,
) -> None:
    """Show what a stage file holds: stage, config, lineage, cases, arrays.

    Example: uqseg info predict.h5 --json | jq .cases_complete
    """
    if not file.exists() and not Path(str(file) + ".partial").is_dir():
        raise StoreError(f"{file}: file not found")
    d = describe(file)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        _print(d)


def register(app: typer.Typer) -> None:
    app.command("info", help="Show what a stage file holds: stage, config, lineage, cases and arrays.")(info)
