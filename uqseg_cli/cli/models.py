"""`uqseg models`: the registered segmentation architectures, parameter counts and input-size rules."""

from __future__ import annotations

import typer

from uqseg_cli.cli.common import JsonOut, emit_json


def models(json_out: JsonOut = False) -> None:
    """List the segmentation architectures with parameter counts (3 input channels, 2 classes) and the input
    sizes they accept.

    Examples:
      uqseg models
      uqseg models --json | jq '.[].name'
    """
    import torch

    from uqseg_cli.models.registry import create_model, list_models

    rows = []
    for info in list_models():
        with torch.device("meta"):
            m = create_model(info.name)
        dropout = f"{m.init_args['dropout']} at {m.dropout_at}"
        rows.append(
            {
                "name": info.name,
                "dims": info.dims,
                "parameters": m.num_parameters(),
                "input": m.input_rule,
                "dropout": dropout,
                "description": info.description,
            }
        )
    if json_out:
        emit_json(rows)
        return
    w = max(len(r["name"]) for r in rows)
    wi = max(len(r["input"]) for r in rows)
    typer.echo(f"{'name':<{w}}  dims  params   {'input sizes':<{wi}}  dropout      description")
    for r in rows:
        typer.echo(
            f"{r['name']:<{w}}  {r['dims']}D    {r['parameters'] / 1e6:5.2f} M  {r['input']:<{wi}}  "
            f"{r['dropout']:<11}  {r['description']}"
        )


def register(app: typer.Typer) -> None:
    app.command("models")(models)
