"""What ``uqseg demo`` runs: synthetic data, then the real stage commands in-process, then a summary.

Steps (each one the same command a user would type, run in-process):
train (2 ensemble members) → predict (with reference and three raters) → sample (MC dropout, ensemble, TTA) →
uncertainty → aggregate (+ correlation report) → score (feature regressors, 5-fold cross-fitting; CNN framework
on one method/measure) → evaluate (CURVAS protocol against the raters) → explain (Grad-CAM, UMAP, report.html).
The segmenter is trained on one part of the cases and everything downstream runs on the cases it never saw.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from uqseg_cli.errors import UqsegError
from uqseg_cli.io.atomic import atomic_write_text
from uqseg_cli.io.synthetic import write_demo_dataset
from uqseg_cli.progress import log


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo run. ``quick`` is for tests and smoke checks (seconds, not minutes)."""

    cases: int = 88
    train_cases: int = 20
    height: int = 64
    width: int = 96
    epochs: int = 25
    samples: int = 8
    cnn_epochs: int = 15
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(cases=16, train_cases=6, epochs=2, samples=3, cnn_epochs=2)

    @classmethod
    def of(cls, quick: bool = False, epochs: int | None = None) -> DemoConfig:
        """The full or the ``quick`` size, with ``epochs`` segmenter epochs when given."""
        cfg = cls.quick() if quick else cls()
        return cfg if epochs is None else replace(cfg, epochs=epochs)


def prepare_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds something, unless ``overwrite`` (then it is emptied)."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UqsegError(f"{out}: exists and is not empty; pass --overwrite or choose another -o")
        shutil.rmtree(out)


def write_summary(out: Path, summary: dict) -> Path:
    """``<out>/summary.json``: the summary of :func:`run_demo`."""
    return atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def write_manifests(data: Path, train_cases: int) -> tuple[Path, Path]:
    """``train.csv`` (case, image, mask) and ``test.csv`` (+ three raters) over the generated folders."""
    ids = sorted(p.name[: -len(".png")] for p in (data / "images").glob("*.png"))
    if len(ids) <= train_cases + 3:
        raise UqsegError(f"demo: need more than {train_cases + 3} cases, got {len(ids)}")
    train, test = data / "train.csv", data / "test.csv"
    with train.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image", "mask"])
        for c in ids[:train_cases]:
            w.writerow([c, f"images/{c}.png", f"masks/{c}.png"])
    with test.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image", "mask", "rater1", "rater2", "rater3"])
        for c in ids[train_cases:]:
            w.writerow([c, f"images/{c}.png", f"masks/{c}.png", *(f"rater{k}/{c}.png" for k in (1, 2, 3))])
    return train, test


def pipeline_steps(out: Path, cfg: DemoConfig, device: str, quiet: bool) -> list[tuple[str, list[str]]]:
    """The stage commands of the demo, as (title, argv) pairs."""
    tail = ["--device", device, *(["-q"] if quiet else [])]  # machine options of the stages that take them
    q = ["-q"] if quiet else []
    return segmentation_steps(out, cfg, tail, q) + quality_steps(out, cfg, tail, q)


def segmentation_steps(out: Path, cfg: DemoConfig, tail: list[str], q: list[str]) -> list[tuple[str, list[str]]]:
    """train, predict, sample, uncertainty, aggregate."""
    o = lambda name: str(out / name)  # noqa: E731
    return [
        ("train the segmenter (unet-small, 2 ensemble members)",
         ["train", "-i", o("data/train.csv"), "-m", "unet-small", "-o", o("seg.pt"), "--members", "2",
          "--epochs", str(cfg.epochs), "--input-size", f"{cfg.height}x{cfg.width}", "--lr", "3e-3",
          "--val-fraction", "0.2", "--seed", str(cfg.seed), *tail]),
        ("predict the unseen cases (with reference and 3 raters)",
         ["predict", "-i", o("data/test.csv"), "-m", o("seg.pt"), "-o", o("predict.h5"), *tail]),
        ("sample: MC dropout, deep ensemble, test-time augmentation",
         ["sample", "-i", o("predict.h5"), "-m", o("seg.pt"), "--method", "mcdropout,ensemble,tta",
          "-T", str(cfg.samples), "-o", o("samples.h5"), "--seed", str(cfg.seed), *tail]),
        ("uncertainty maps", ["uncertainty", "-i", o("samples.h5"), "-o", o("uncertainty.h5"), *q]),
        ("aggregate per-case scores (+ correlation with Dice, IoU, HD95)",
         ["aggregate", "-i", o("uncertainty.h5"), "-o", o("features.csv"), "--correlate", o("correlations.csv"),
          *q]),
    ]


def quality_steps(out: Path, cfg: DemoConfig, tail: list[str], q: list[str]) -> list[tuple[str, list[str]]]:
    """score (features, then the CNN), evaluate, explain."""
    o = lambda name: str(out / name)  # noqa: E731
    return [
        ("score: feature regressors, 5-fold cross-fitted",
         ["score", "-i", o("uncertainty.h5"), "--framework", "features", "--features", o("features.csv"),
          "--cv", "5", "-o", o("scores.csv"), "--save-model", o("quality-features.pt"), "--seed", str(cfg.seed),
          *q]),
        ("score: CNN on segmentation + TTA entropy, 3-fold cross-fitted",
         ["score", "-i", o("uncertainty.h5"), "--framework", "seg-unc", "--method", "tta", "--measure", "entropy",
          "--cv", "3", "--epochs", str(cfg.cnn_epochs), "--input-size", "64", "-o", o("scores_cnn.csv"),
          "--save-model", o("quality.pt"), "--seed", str(cfg.seed), *tail]),
        ("evaluate against the three raters (CURVAS protocol)",
         ["evaluate", "-i", o("samples.h5"), "-o", o("metrics.csv"), "--crps", "gaussian,curvas,ensemble", *q]),
        ("explain: Grad-CAM, UMAP, plots, report.html",
         ["explain", "-i", o("scores_cnn.csv"), "--h5", o("uncertainty.h5"), "--model", o("quality.pt"),
          "--features", o("features.csv"), "--bins", o("metrics.bins.csv"), "--worst", "4", "-o", o("explain"),
          "--seed", str(cfg.seed), *tail]),
    ]


def run_demo(out: Path, cfg: DemoConfig, device: str = "auto", quiet: bool = False) -> dict:
    """Generate the data and run every stage into ``out``; returns a summary dict (see ``summarise``)."""
    t_start = time.perf_counter()
    write_demo_dataset(out / "data", n=cfg.cases, seed=cfg.seed, h=cfg.height, w=cfg.width)
    write_manifests(out / "data", cfg.train_cases)
    log(
        f"demo: {cfg.cases} synthetic lesion photos ({cfg.height}x{cfg.width}) in {out / 'data'}; "
        f"{cfg.train_cases} train the segmenter, {cfg.cases - cfg.train_cases} are evaluated",
        quiet,
    )
    timings = run_steps(pipeline_steps(out, cfg, device, quiet), quiet)
    summary = summarise(out)
    summary["seconds"] = {**timings, "total": round(time.perf_counter() - t_start, 2)}
    return summary


def run_steps(steps: list[tuple[str, list[str]]], quiet: bool) -> dict[str, float]:
    """Run each (title, argv) through the real command line, in-process; seconds per step (``score:<framework>``
    for the score steps). A step that exits non-zero stops the demo."""
    import typer.main

    from uqseg_cli.cli.app import app

    cmd = typer.main.get_command(app)
    timings = {}
    for i, (title, argv) in enumerate(steps, 1):
        log(f"demo step {i}/{len(steps)}: {title}\n    $ uqseg {' '.join(argv)}", quiet)
        t0 = time.perf_counter()
        rc = cmd.main(argv, prog_name="uqseg", standalone_mode=False)
        timings[argv[0] if argv[0] != "score" else f"score:{argv[4]}"] = round(time.perf_counter() - t0, 2)
        if isinstance(rc, int) and rc != 0:
            raise UqsegError(f"demo: step 'uqseg {argv[0]}' exited with {rc}")
    return timings


def summarise(out: Path) -> dict:
    """The headline numbers of a demo folder: segmentation Dice, quality prediction, calibration, volumes."""
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    true = scores.drop_duplicates("case")["true_dice"]
    qual = pd.concat([pd.read_csv(out / "scores.summary.csv"), pd.read_csv(out / "scores_cnn.summary.csv")])
    qual = qual.assign(beats=qual["beats_baseline"].astype(str).str.lower() == "true")
    return {
        "folder": str(out),
        "cases": int(len(true)),
        "segmentation_dice": {"mean": float(true.mean()), "min": float(true.min()), "max": float(true.max())},
        "quality": [quality_row(r) for _, r in qual.iterrows()],
        "headline": headline(qual),
        "calibration": calibration(pd.read_csv(out / "metrics.summary.csv")),
        "report": str(out / "explain" / "report.html"),
    }


def quality_row(r) -> dict:
    """One row of the score summaries (``beats_baseline`` None for the baseline itself)."""
    return {
        **{
            k: (float(r[k]) if k in ("r2", "pearson", "mae") else str(r[k]))
            for k in ("method", "measure", "framework", "r2", "pearson", "mae", "detail")
        },
        "beats_baseline": bool(r["beats"]) if r["framework"] != "baseline" else None,
    }


def headline(qual) -> dict | None:
    """The best model that beats the best single feature and the mean (R² > 0), never a failing one; or None."""
    honest = qual[qual["beats"] & (qual["r2"] > 0) & (qual["framework"] != "baseline")].sort_values(
        "r2", ascending=False
    )
    if honest.empty:
        return None
    h = honest.iloc[0]
    base = qual[(qual["framework"] == "baseline") & (qual["method"] == h["method"])
                & (qual["measure"] == h["measure"])]
    return {"method": str(h["method"]), "measure": str(h["measure"]), "framework": str(h["framework"]),
            "r2": float(h["r2"]), "pearson": float(h["pearson"]), "mae": float(h["mae"]),
            "baseline_r2": float(base["r2"].iloc[0]) if len(base) else float("nan")}


def calibration(metrics) -> dict:
    """Per method: ECE, consensus Dice, dissensus fraction and volume CRPS from metrics.summary.csv."""
    import pandas as pd

    def metric(method: str, cls: str, name: str) -> float:
        row = metrics[(metrics["method"] == method) & (metrics["class"] == cls) & (metrics["metric"] == name)]
        if row.empty:
            return float("nan")
        pooled = row["pooled"].iloc[0] if "pooled" in row else float("nan")
        return float(pooled if pd.notna(pooled) else row["mean"].iloc[0])

    return {
        m: {
            "ece": metric(m, "all", "ece"),
            "dice_consensus": metric(m, "foreground", "dice_consensus"),
            "dissensus_fraction": metric(m, "foreground", "dissensus_fraction"),
            "crps_gaussian_ml": metric(m, "foreground", "crps_gaussian_ml"),
        }
        for m in sorted(metrics["method"].unique())
    }


def print_summary(s: dict) -> None:
    """A readable summary on stdout (rich tables)."""
    import shutil

    from rich.console import Console

    con = Console(width=max(shutil.get_terminal_size((120, 24)).columns, 110))
    d = s["segmentation_dice"]
    con.print(f"[bold]uqseg demo[/bold] — {s['cases']} unseen cases in {s['folder']}")
    con.print(f"segmentation Dice vs reference: mean {d['mean']:.3f} (min {d['min']:.3f}, max {d['max']:.3f})")
    h = s.get("headline")
    if h:
        con.print(
            f"[bold]predicted Dice without ground truth[/bold]: {h['method']}/{h['measure']}/{h['framework']} "
            f"R² {h['r2']:.3f}, Pearson {h['pearson']:.3f}, MAE {h['mae']:.3f} out of fold "
            f"(best single feature: R² {h['baseline_r2']:.3f})"
        )
    else:
        con.print("[bold red]no quality regressor beats the best single feature on these cases[/bold red]")
    con.print(quality_table(s["quality"]))
    con.print(calibration_table(s["calibration"]))
    con.print(f"report: {s['report']}   (total {s['seconds']['total']:.0f} s)")


def quality_table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="Quality prediction without ground truth (out-of-fold)")
    for col in ("method", "measure", "framework", "R²", "Pearson", "MAE", "vs best single feature", "detail"):
        t.add_column(col)
    for r in rows:
        b = r.get("beats_baseline")
        beats = "" if b is None else ("beats it" if b else "[red]does not beat it[/red]")
        t.add_row(r["method"], r["measure"], r["framework"], f"{r['r2']:.3f}", f"{r['pearson']:.3f}",
                  f"{r['mae']:.3f}", beats, r["detail"])
    return t


def calibration_table(calib: dict):
    from rich.table import Table

    t = Table(title="Against three raters (CURVAS protocol)")
    for col in ("method", "ECE", "Dice (consensus)", "dissensus fraction", "volume CRPS (ml)"):
        t.add_column(col)
    for m, v in calib.items():
        t.add_row(m, f"{v['ece']:.3f}", f"{v['dice_consensus']:.3f}", f"{v['dissensus_fraction']:.3f}",
                  f"{v['crps_gaussian_ml']:.3f}")
    return t
