"""The ``uqseg models`` command: prints the table of models/describe.py."""

from __future__ import annotations

import typer

from uqseg_cli.cli.common import JsonOut, emit_json


def models(json_out: JsonOut = False) -> None:
    """Parameter counts are for 3 input channels and 2 classes.

    Examples:
      uqseg models
      uqseg models --json | jq '.[].name'
    """
    from uqseg_cli.models.describe import describe_architectures

    rows = describe_architectures()
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
