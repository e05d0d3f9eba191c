"""The `uqseg sample` command: its options, parsed into :mod:`uqseg_cli.stages.sample` and run there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqseg_cli.cli.common import (
    BatchSize,
    Device,
    JsonOut,
    NumParts,
    Overwrite,
    PartId,
    Quiet,
    Seed,
    Threads,
    finish,
    stage_json,
)
from uqseg_cli.cli.params import complete_list
from uqseg_cli.parsing import split_list

METHOD_HELP = (
    "Comma list or repeat: mcdropout, ensemble, tta [default: every method the checkpoints allow]; or files "
    "(external predictions, one folder per sample: --from)."
)


def _complete_methods(incomplete: str) -> list[str]:
    """Shell completion of --method (the samplers are imported only here, not to list the commands)."""
    from uqseg_cli.bayes.sampling import METHODS
    from uqseg_cli.stages.sample import FILES

    return complete_list((*METHODS, FILES))(incomplete)


def sample(
    input: Annotated[
        Path | None, typer.Option("-i", "--input", help="predict.h5 from `uqseg predict` [default: ./predict.h5].")
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "-m",
            "--model",
            help="Checkpoint(s): a file (its seg.member<k>.pt siblings join the ensemble), a folder, a glob, "
            "or a comma list; repeatable. Member 0 (the first) runs MC dropout and TTA. "
            "[default: the checkpoint recorded in predict.h5]. e.g. -m seg.pt or -m 'runs/*/seg.pt'",
        ),
    ] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--method", autocompletion=_complete_methods, help=METHOD_HELP)
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "-T",
            "--samples",
            min=1,
            help="Samples for MC dropout and TTA (TTA: at most 8 transforms unless --tta-intensity) [default: 20]; "
            "the ensemble has one per member.",
        ),
    ] = None,
    tta_intensity: Annotated[
        float,
        typer.Option(
            "--tta-intensity",
            min=0.0,
            help="TTA intensity jitter s: sample t sees a*x+b, a~U(1-s,1+s), b~U(-s,s) on the normalised input "
            "(0 = flips/rotations only). e.g. --tta-intensity 0.1",
        ),
    ] = 0.0,
    keep_samples: Annotated[
        bool, typer.Option("--keep-samples", help="Also store every sample (T, K, *spatial) float16 (large).")
    ] = False,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            help="--method files: folders of another tool's predictions, one per sample (comma list or repeat), "
            "files by case id as in `uqseg import`. e.g. --from fold0/,fold1/,fold2/,fold3/,fold4/",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file, e.g. -o samples.h5.")] = Path(
        "samples.h5"
    ),
    device: Device = "auto",
    threads: Threads = 0,
    batch_size: BatchSize = 8,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="float16 autocast on CUDA (ignored on the CPU).")] = True,
    seed: Seed = 0,
    num_parts: NumParts = None,
    part_id: PartId = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonOut = False,
) -> None:
    """Draw stochastic predictions of every case of predict.h5 and store their running sums in samples.h5.

    Per case and method: Σp, Σlog p, ΣH[p] per voxel and the T predicted volumes, so `uqseg uncertainty` is
    exact for any T in memory that does not grow with T. Every random draw comes from (--seed, case, method):
    resumed and sharded runs write identical numbers.

    Examples:
      uqseg sample -m seg.pt                                  # predict.h5 -> samples.h5, all methods possible
      uqseg sample -i predict.h5 -m seg.pt --method mcdropout,tta -T 30 -o samples.h5
      uqseg sample -m 'runs/*/seg.pt' --method ensemble       # deep ensemble of several checkpoints
      uqseg sample -m seg.pt --num-parts 4 --part-id 0        # one part of an array job
      uqseg sample --method files --from fold0/,fold1/,fold2/,fold3/,fold4/   # nnU-Net folds as the samples
    """
    from uqseg_cli.stages.base import Report
    from uqseg_cli.stages.sample import SampleOptions, run

    options = SampleOptions(
        input=input, output=output, models=split_list(models), methods=split_list(methods), T=samples,
        tta_intensity=tta_intensity, keep_samples=keep_samples, sources=split_list(sources), batch_size=batch_size,
        amp=amp, seed=seed, num_parts=num_parts, part_id=part_id, overwrite=overwrite, device=device, threads=threads,
    )
    result = run(options, Report(quiet))
    if json_out:
        stage_json(result)
    finish(result)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
