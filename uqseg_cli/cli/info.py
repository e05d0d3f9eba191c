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


def is_checkpoint(path: Path) -> bool:
    """A torch file (``seg.pt``, ``quality.pt``: a zip archive, or named ``.pt``/``.pth``) rather than HDF5."""
    import zipfile

    return path.is_file() and (path.suffix.lower() in (".pt", ".pth") or zipfile.is_zipfile(path))


def describe_checkpoint(path: Path) -> dict:
    """A JSON-able description of a segmenter (``seg.pt``) or quality model (``quality.pt``); loads with
    ``weights_only=True`` like every uqseg checkpoint, so describing a file from the internet runs no code."""
    import warnings

    import torch

    from uqseg_cli.models.checkpoint import read_checkpoint
    from uqseg_cli.quality.checkpoint import FORMAT as QUALITY_FORMAT

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
        fmt = payload.get("format") if isinstance(payload, dict) else None
    except Exception:
        fmt = None  # read_checkpoint below says what is wrong, in one line
    if fmt == QUALITY_FORMAT:
        return _describe_quality(path)
    meta, state = read_checkpoint(path)
    prep = meta.preprocessing
    return {
        "file": str(path),
        "kind": "segmenter",
        "architecture": meta.arch,
        "parameters": int(sum(int(t.numel()) for t in state.values())),
        "dims": meta.dims,
        "classes": list(meta.class_names),
        "input": {
            "modality": prep.modality,
            "channels": prep.channels,
            "size": list(prep.input_size),
            "resize": prep.resize,
            "intensity_window": prep.intensity_window,
        },
        "dropout": {k: meta.init_args.get(k) for k in ("dropout", "dropout_at") if k in meta.init_args},
        "member": meta.member,
        "members": meta.members,
        "fold": meta.fold,
        "folds": meta.folds,
        "training": {
            "epochs": meta.epochs,
            "best_epoch": meta.best_epoch,
            "val_dice": meta.val_dice,
            "train_cases": len(meta.train_case_ids),
            "val_cases": len(meta.val_case_ids),
            "seed": meta.seed,
            "data_fingerprint": meta.data_fingerprint,
            **{k: v for k, v in (meta.training or {}).items() if not isinstance(v, (list, dict))},
        },
        "uqseg_version": meta.uqseg_version,
    }


def _describe_quality(path: Path) -> dict:
    from uqseg_cli.quality.checkpoint import read_quality_checkpoint

    loaded = read_quality_checkpoint(path)
    meta = loaded["meta"]
    state = loaded.get("state_dict") or {}
    seg = meta.get("segmenter")
    if isinstance(seg, str):  # older files keep it as text
        seg = {"description": seg}
    d = {
        "file": str(path),
        "kind": "quality model",
        "framework": meta.get("framework"),
        "method": meta.get("method"),
        "measure": meta.get("measure"),
        "target": meta.get("target", "dice"),
        "train_cases": len(meta.get("train_cases", [])),
        "segmenter": seg or {},
    }
    if meta.get("framework") == "features":
        d["architecture"] = "linear and random-forest regression on aggregated features"
        d["features"] = list(meta.get("features", []))
        d["models"] = sorted((loaded.get("arrays") or {}).keys())
    else:
        d["architecture"] = f"{meta.get('backbone')} ({meta.get('dims')}D CNN), sigmoid output"
        d["parameters"] = int(sum(int(t.numel()) for t in state.values()))
        d["input"] = {"size": meta.get("input_size"), "channels": meta.get("channels"),
                      "classes": meta.get("num_classes")}
        d["training"] = meta.get("training", {})
    return d


def _print_checkpoint(d: dict) -> None:
    typer.echo(f"file:          {d['file']}")
    typer.echo(f"kind:          {d['kind']}")
    typer.echo(f"architecture:  {d['architecture']}" + (f", {d['parameters'] / 1e6:.2f} M parameters"
                                                        if d.get("parameters") else ""))
    if d["kind"] == "segmenter":
        typer.echo(f"classes:       {', '.join(d['classes'])}")
        i = d["input"]
        win = f", window {i['intensity_window']} HU" if i.get("intensity_window") else ""
        typer.echo(f"input:         {i['modality']}, {i['channels']} channel(s), {d['dims']}D grid "
                   f"{'x'.join(map(str, i['size']))} ({i['resize']}){win}")
        if d["dropout"]:
            typer.echo(f"dropout:       {d['dropout'].get('dropout')} at {d['dropout'].get('dropout_at')}")
        ens = f"member {d['member']} of {d['members']}" if d["members"] > 1 else "single model"
        if d["folds"]:
            ens = f"fold member {d['member']} of {d['folds']} (left out fold {d['fold']})"
        typer.echo(f"ensemble:      {ens}")
        t = d["training"]
        vd = "n/a" if t.get("val_dice") is None else f"{t['val_dice']:.4f}"
        typer.echo(f"training:      {t['epochs']} epoch(s), best epoch {t['best_epoch']}, validation Dice {vd}, "
                   f"{t['train_cases']} training + {t['val_cases']} validation case(s), seed {t['seed']}")
        typer.echo(f"uqseg:         {d['uqseg_version']}")
        return
    typer.echo(f"predicts:      {d['target']} from {d['method']}/{d['measure']} (framework {d['framework']})")
    if d.get("input"):
        i = d["input"]
        grid = "x".join(map(str, i["size"] or []))
        typer.echo(f"input:         grid {grid}, channels {', '.join(i['channels'] or [])}")
    if d.get("features"):
        typer.echo(f"features:      {len(d['features'])} ({', '.join(d['features'][:4])}, ...)")
    t = d.get("training") or {}
    if t:
        mse = float(t.get("best_val_mse", float("nan")))
        typer.echo(f"training:      {t.get('n_train')} (+{t.get('n_val')} validation) case(s), best epoch "
                   f"{t.get('best_epoch')}/{t.get('epochs_run')}, validation MSE {mse:.4f}")
    else:
        typer.echo(f"training:      fitted on {d['train_cases']} case(s)")
    seg = d.get("segmenter") or {}
    if seg.get("arch") or seg.get("checkpoint"):
        typer.echo(f"segmenter:     {seg.get('arch', '?')} ({seg.get('checkpoint', '?')})")


def info(
    file: Annotated[
        Path, typer.Argument(help="A uqseg HDF5 file (predict.h5, samples.h5, ...) or checkpoint (seg.pt, quality.pt).")
    ],
    as_json: JsonOut = False,
) -> None:
    """Show what a stage file holds (stage, config, lineage, cases, arrays), or describe a checkpoint
    (architecture, classes, input size, training record).

    Examples:
      uqseg info predict.h5 --json | jq .cases_complete
      uqseg info seg.pt                  # segmenter: architecture, classes, input, training record
      uqseg info quality.pt              # quality model: framework, method/measure, input, training record
    """
    if not file.exists() and not Path(str(file) + ".partial").is_dir():
        raise StoreError(f"{file}: file not found")
    if is_checkpoint(file):
        d = describe_checkpoint(file)
        if as_json:
            typer.echo(json.dumps(d, indent=2, default=str))
        else:
            _print_checkpoint(d)
        return
    d = describe(file)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        _print(d)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
