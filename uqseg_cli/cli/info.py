"""The ``uqseg info`` command: prints what io/describe.py (stage files) or quality/describe.py (checkpoints) read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import JsonOut, emit_json


def _print_stage_file(d: dict) -> None:
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
    _print_arrays(d)


def _print_arrays(d: dict) -> None:
    """The arrays of the first case of each layout (shapes differ per case, names and dtypes usually not)."""
    from uqseg_cli.io.describe import array_layouts

    for ids in array_layouts(d).values():
        more = f" (and {len(ids) - 1} more with the same arrays)" if len(ids) > 1 else ""
        typer.echo(f"arrays of {ids[0]}{more}:")
        for a in d["cases"][ids[0]]["arrays"]:
            typer.echo(f"  {a['name']:<28} {str(tuple(a['shape'])):<24} {a['dtype']}")


def _print_checkpoint(d: dict) -> None:
    typer.echo(f"file:          {d['file']}")
    typer.echo(f"kind:          {d['kind']}")
    typer.echo(f"architecture:  {d['architecture']}" + (f", {d['parameters'] / 1e6:.2f} M parameters"
                                                        if d.get("parameters") else ""))
    if d["kind"] == "segmenter":
        _print_segmenter(d)
    else:
        _print_quality_model(d)


def _print_segmenter(d: dict) -> None:
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


def _print_quality_model(d: dict) -> None:
    typer.echo(f"predicts:      {d['target']} from {d['method']}/{d['measure']} (framework {d['framework']})")
    if d.get("input"):
        i = d["input"]
        grid = "x".join(map(str, i["size"] or []))
        typer.echo(f"input:         grid {grid}, channels {', '.join(i['channels'] or [])}")
    if d.get("features"):
        typer.echo(f"features:      {len(d['features'])} ({', '.join(d['features'][:4])}, ...)")
    t = d.get("training") or {}
    if t.get("critics"):
        for k, c in enumerate(t["critics"]):
            typer.echo(f"critic {k}:      {c.get('n_train')} (+{c.get('n_val')} validation) case(s), best epoch "
                       f"{c.get('best_epoch')}/{c.get('epochs_run')}, validation loss {c.get('best_val_loss'):.4f}")
    elif t:
        for name, r in [("training:     ", t), *((f"fold {k}:       ", r) for k, r in enumerate(t.get("folds") or []))]:
            mse = float(r.get("best_val_mse", float("nan")))
            typer.echo(f"{name} {r.get('n_train')} (+{r.get('n_val')} validation) case(s), best epoch "
                       f"{r.get('best_epoch')}/{r.get('epochs_run')}, validation MSE {mse:.4f}")
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
    """Or, for a checkpoint (seg.pt, quality.pt): architecture, classes, input size and training record.

    Examples:
      uqseg info predict.h5 --json | jq .cases_complete
      uqseg info seg.pt                  # segmenter: architecture, classes, input, training record
      uqseg info quality.pt              # quality model: framework, method/measure, input, training record
    """
    from uqseg_cli.io.describe import check_exists, describe_stage_file, is_checkpoint

    check_exists(file)
    if is_checkpoint(file):
        from uqseg_cli.quality.describe import describe_checkpoint

        d, show = describe_checkpoint(file), _print_checkpoint
    else:
        d, show = describe_stage_file(file), _print_stage_file
    if as_json:
        emit_json(d)
    else:
        show(d)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
