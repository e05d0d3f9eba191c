"""Stage ``explain``: Grad-CAM of the quality regressor, UMAP of its embedding, plots and report.html.

The steps themselves are :func:`uqseg_cli.explain.pipeline.explain`; this stage finds and opens its inputs (the
scores table or stage file, the quality model beside it, the stage file holding the cases, `evaluate`'s per-bin
sums, a feature table) and gives the pipeline the resume config of the Grad-CAM file.

Layout written into the output folder: ``gradcam-<direction>.h5`` (or ``hirescam-<direction>.h5``; per case
``cases/<id>/gradcam``, see :data:`LAYOUT`), figures (``gradcam-<direction>/<case>.png``, ``umap*.png``,
``pred_vs_true.png``, ``reliability-<method>.png``, ``uncertainty/<case>.png``; also ``.pdf`` with ``formats``),
tables (``umap.csv``, ``umap_features.csv``) and ``report.html``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.gradcam import CAM_METHODS, DIRECTIONS
from uqseg_cli.stages.base import Report, StageResult, option, resume_config
from uqseg_cli.stages.device import apply_threads, resolve_device

if TYPE_CHECKING:
    import torch

    from uqseg_cli.quality.meta import QualityMeta

STAGE = "explain"
INPUTS = ("scores.csv", "uncertainty.h5")  # tried in the current folder when no input is given
LAYOUT = {
    "gradcam": "float32 (*spatial): the combined CAM on the case's original grid (0 = no relevance); attributes "
    "predicted (the model's output), layer, direction, spacing",
}
COLOR_BY = ("auto", "true", "predicted")


@dataclass(kw_only=True)
class ExplainOptions:
    """Options of ``explain``. The fields with ``config`` are the resume config of the Grad-CAM file (with the
    model's fingerprint and the resolved layer); the others change only the figures, tables and report, which are
    written anew on every run."""

    input: Path | None = None  # None: ./scores.csv, else ./uncertainty.h5
    output: Path = Path("explain")
    model: Path | None = None  # None: quality.pt beside the input, if present
    h5: Path | None = None  # with a scores table: the stage file holding the cases (None: uncertainty.h5 beside it)
    features: Path | None = None
    bins: Path | None = None  # None: metrics.bins.csv beside the input, if present
    direction: str = option("high", config=True)
    cam: str = option("gradcam", config=True)
    layer: str | None = None  # None: the model's last three resolution stages (resolved, then in the config)
    worst: int | None = None
    best: int | None = None
    slices: int = option(9, config=True)
    formats: tuple[str, ...] = option(("png",), config=True)
    batch_size: int = option(8, config=True)  # CAMs of a batch differ in the last bits from one at a time
    color_by: str = "auto"
    n_neighbors: int = 15
    min_dist: float = 0.1
    uncertainty_cases: int = 5
    method: str | None = None
    measure: str | None = None
    framework: str | None = None
    gradcam: bool = True
    seed: int = 0
    overwrite: bool = False
    device: str = "auto"  # auto, cpu, cuda or cuda:N (stages/device.py)
    threads: int = 0  # 0: the libraries' default

    def __post_init__(self) -> None:
        for name in ("input", "model", "h5", "features", "bins"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        self.output = Path(self.output)
        self.formats = tuple(self.formats)
        self.batch_size = int(self.batch_size)
        if self.direction not in DIRECTIONS:
            raise UqsegError(f"--direction {self.direction!r}: choose high or low")
        if self.cam not in CAM_METHODS:
            raise UqsegError(f"--cam {self.cam!r}: choose {' or '.join(CAM_METHODS)}")
        if self.color_by not in COLOR_BY:
            raise UqsegError(f"--color-by {self.color_by!r}: choose auto, true or predicted")


def find_input(path: Path | None) -> Path:
    """The given input, else ./scores.csv, else ./uncertainty.h5."""
    if path is not None:
        if not Path(path).exists():
            raise UqsegError(f"{path}: input not found")
        return Path(path)
    for name in INPUTS:
        if Path(name).exists():
            return Path(name)
    raise UqsegError("no -i given and neither scores.csv nor uncertainty.h5 is in the current folder")


def beside(base: Path, name: str) -> Path | None:
    """``name`` in the folder of ``base``, else in the current folder, else None."""
    for p in (base.parent / name, Path(name)):
        if p.exists():
            return p
    return None


def load_model(options: ExplainOptions, src: Path) -> tuple[object, QualityMeta | None, Path | None, torch.device]:
    """The quality model (on ``options.device``), its metadata, its path and the device; the model, metadata and
    path are None without one."""
    model_path = options.model if options.model is not None else beside(src, "quality.pt")
    if options.model is not None and not model_path.exists():
        raise UqsegError(f"--model {options.model}: quality model not found")
    device = resolve_device(options.device)
    if model_path is None:
        return None, None, None, device
    from uqseg_cli.quality.checkpoint import load_quality_model

    model, meta = load_quality_model(model_path)
    return model.to(device), meta, model_path, device


def cases_file(options: ExplainOptions, src: Path, meta: QualityMeta | None, has_model: bool):
    """The scores rows (with a scores table as input, else None) and the stage file holding the cases (or None)."""
    from uqseg_cli.explain.pipeline import read_scores

    scores, h5_path = None, src
    if src.suffix.lower() == ".csv":
        prefer = {k: getattr(meta, k) if meta is not None else None for k in ("method", "measure", "framework")}
        scores = read_scores(src, method=options.method, measure=options.measure, framework=options.framework,
                             prefer=prefer)
        h5_path = options.h5 if options.h5 is not None else beside(src, "uncertainty.h5")
        if options.h5 is not None and not h5_path.exists():
            raise UqsegError(f"--h5 {options.h5}: not found")
    if has_model and h5_path is None:
        raise UqsegError(f"{src}: the model needs the cases' arrays; pass --h5 uncertainty.h5")
    return scores, h5_path


def side_tables(options: ExplainOptions, src: Path, meta: QualityMeta | None) -> dict:
    """The tables beside the input the report shows or links: `evaluate`'s per-bin sums and summary, the feature
    table, `score`'s summary; as keyword arguments of the pipeline."""
    import pandas as pd

    from uqseg_cli.io.tables import read_table

    bins_path = options.bins if options.bins is not None else beside(src, "metrics.bins.csv")
    bins_df = read_table(bins_path) if bins_path is not None else None
    summ = bins_path.with_name(bins_path.name.replace(".bins.csv", ".summary.csv")) if bins_path else None
    summary_df = pd.read_csv(summ) if summ is not None and summ.exists() and summ != bins_path else None
    feat_df = read_table(options.features, required=["case"]) if options.features is not None else None
    # the report links the full tables instead of printing them
    scores_summary, links = None, []
    if src.suffix.lower() == ".csv":
        s_sum = src.with_name(f"{src.stem}.summary.csv")
        scores_summary = pd.read_csv(s_sum) if s_sum.exists() else None
        links += [(src, f"{src.name} (predicted and true {meta.target if meta is not None else 'dice'} of every case)")]
        if s_sum.exists():
            links.append((s_sum, f"{s_sum.name} (R², Pearson, Spearman, MAE, AURC of every configuration)"))
    if bins_path is not None:
        for p, what in ((summ, "every metric, per method and class"), (bins_path.with_name(
                bins_path.name.replace(".bins.csv", ".csv")), "every case, method and class")):
            if p is not None and p.exists() and p != bins_path:
                links.append((p, f"{p.name} ({what})"))
    out_dir = options.output.resolve()
    extra_links = [(os.path.relpath(Path(p).resolve(), out_dir), label) for p, label in links]
    return {"features": feat_df, "bins": bins_df, "summary_table": summary_df, "scores_summary": scores_summary,
            "extra_links": extra_links}


def pipeline_options(options: ExplainOptions, device, quiet: bool):
    """The pipeline's options of this run."""
    from uqseg_cli.explain.pipeline import ExplainOptions as PipelineOptions

    return PipelineOptions(
        out_dir=options.output, direction=options.direction, cam_method=options.cam, layer=options.layer,
        worst=options.worst, best=options.best, slices=options.slices, seed=options.seed,
        n_neighbors=options.n_neighbors, min_dist=options.min_dist, color_by=options.color_by,
        uncertainty_cases=options.uncertainty_cases, method=options.method, measure=options.measure,
        formats=options.formats, batch_size=options.batch_size, device=str(device), overwrite=options.overwrite,
        quiet=quiet, gradcam=options.gradcam,
    )


def run(options: ExplainOptions, report: Report | None = None) -> StageResult:
    """Explain the quality predictions of ``options.input`` into the folder ``options.output``.

    ``summary`` of the result: the pipeline's summary (regression, gradcam, headline, cases, report, ...) and
    ``files`` (every file written)."""
    from uqseg_cli.explain.pipeline import explain
    from uqseg_cli.io.store import StageFile

    report = report or Report()
    apply_threads(options.threads)
    src = find_input(options.input)
    model, meta, model_path, device = load_model(options, src)
    scores, h5_path = cases_file(options, src, meta, model is not None)
    tables = side_tables(options, src, meta)
    sf = StageFile(h5_path) if h5_path is not None else None
    try:
        result = explain(
            pipeline_options(options, device, report.quiet), sf=sf, sf_path=h5_path, model=model, meta=meta,
            model_path=model_path, scores=scores, resume_config=partial(resume_config, options), **tables,
        )
    finally:
        if sf is not None:
            sf.close()
    if not result.interrupted:
        report.log(f"wrote {len(result.files)} file(s) to {result.out_dir}; open {result.out_dir / 'report.html'}")
    return StageResult(
        out=result.out_dir, failed=dict(result.failed), interrupted=result.interrupted,
        summary={**result.summary, "files": [str(p) for p in result.files]},
    )
