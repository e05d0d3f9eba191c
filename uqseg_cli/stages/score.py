"""Stage ``score``: predict each case's Dice without ground truth (quality regression), honestly evaluated.

Per method × measure × framework (a *configuration*) a quality regressor is fitted on the cases with a reference
(cross-fitted with ``cv`` folds: out-of-fold predictions for them) and predicts every case; the best single
aggregated feature (the baseline) is always reported next to it. With ``model`` a saved ``quality.pt`` predicts
instead (nothing is fitted but the baseline). Files written: see :data:`TABLES` (CSV and torch files, not HDF5;
nothing is resumed). The metadata of ``quality.pt`` is :class:`~uqseg_cli.quality.meta.QualityMeta` (read by
``explain`` and ``info``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uqseg_cli.errors import CaseError, InputError, UqsegError
from uqseg_cli.io.store import StageFile
from uqseg_cli.io.tables import check_writable, read_table, write_table
from uqseg_cli.metrics.overlap import TARGETS
from uqseg_cli.parsing import parse_size
from uqseg_cli.progress import FitProgress, Progress, log, warn
from uqseg_cli.quality.checkpoint import read_quality_checkpoint, save_quality_model
from uqseg_cli.quality.combined import CombinedStats
from uqseg_cli.quality.critic import critic_arch, load_critics, missing_fpn
from uqseg_cli.quality.critic_head import CRITIC_HEADS, HEAD_DETAIL, critic_head_of
from uqseg_cli.quality.features import ALL_FEATURE_MODELS, FEATURE_MODELS
from uqseg_cli.quality.inputs import FRAMEWORKS
from uqseg_cli.quality.level_pairs import LevelPairs, read_level_pairs
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import load_quality_models
from uqseg_cli.quality.regions import RegionParams, collect_features
from uqseg_cli.quality.scoring import (
    ALL_METHODS,
    CNN_MIN_LABELLED,
    COMBINED,
    Batch,
    Prediction,
    cnn_meta,
    feature_names,
    hybrid_features,
    load_masks,
    load_raw,
    make_folds,
    predict_baseline_cv,
    predict_cnn_framework,
    predict_critic_framework,
    predict_critic_loaded,
    predict_features,
    predict_features_loaded,
    score_rows,
    summary_rows,
    with_combined,
)
from uqseg_cli.quality.training import LOSSES, FitConfig, predict_cnn
from uqseg_cli.stages.aggregate import pick_methods_measures
from uqseg_cli.stages.base import Report, StageResult, input_or_default, option
from uqseg_cli.stages.device import apply_threads, resolve_device

STAGE = "score"
PARENT = ("uncertainty", "uncertainty.h5", "uncertainty file")  # the stage it reads, its default file name, what
TABLES = {
    "<output>": "CSV case,method,measure,framework,predicted_<target>,true_<target>,abs_error,split,train_case",
    "<output stem>.summary.csv": "CSV: n, R², Pearson, Spearman, MAE, AURC per method/measure/framework "
    "(or --summary; none with -o -)",
    "<save-model>": "quality.pt of each fitted configuration (several: <stem>.<method>.<measure>.<framework>.pt)",
}
FIT_DEFAULTS = {
    "cnn": {"epochs": 30, "val_fraction": 0.2, "lr": 1e-3},
    "critic": {"epochs": 48, "val_fraction": 0.0, "lr": 5e-4},
    "seg-unc mask": {"epochs": 30, "val_fraction": 0.0, "lr": 1e-3},
}
"""``--epochs``/``--val-fraction``/``--lr`` when not given. A critic trains on its whole fold for a fixed number of
epochs (as segmenters do): early stopping on a 20 % validation part stopped two of five critics at epoch 3–4 and cost
held-out R² on ISIC 2017; 32 epochs instead of 16 raised every one of five critics' held-out Pearson by 0.03–0.05
and the framework's held-out R² from 0.66 to 0.72 (3 seeds), and 48 instead of 32 raised it 0.726 → 0.736 (boost
head) and 0.739 → 0.751 (blend), PH2 Pearson 0.834 → 0.856 (seed 0); over 3 seeds the defaults give 0.754 ± 0.005,
PH2 Pearson 0.853 (docs/quality.md). A seg-unc mask regressor (``--learn-mask``) also trains on its whole part:
held out on ISIC, 600 cases for 30 epochs gave R² 0.700 ± 0.014 (PH2 Pearson 0.873) against 0.624 ± 0.025 (0.830)
with early stopping on 20 %. The mask regressors that see the image (img-seg-unc, hybrid) keep the validation part:
trained to the end they gained in site (img-seg-unc 0.705 → 0.718, 3 seeds) and lost on PH2 (Pearson 0.870 → 0.827;
0.778 on one seed) — with the pixels they learn the annotation style of the set they saw, as critics do."""
PAIR_FRAMEWORKS = ("seg-unc", "img-seg-unc")  # --vote-level-pairs: the CNNs without the features of the scored mask
INIT_FROM = ("auto", "none")  # or the path of a segmenter checkpoint
MEASURE_CHOICES = (COMBINED, "all")  # besides the measures of the file


@dataclass(kw_only=True)
class ScoreOptions:
    """Options of ``score``. Empty lists take the defaults: ``methods`` each method of the file (``["joint"]``:
    every method's features side by side), ``measures`` ``["combined"]`` (``"all"``: each measure and combined),
    ``frameworks`` ``["features"]``, ``feature_models`` linear, forest and boost."""

    input: Path | None = None  # None: ./uncertainty.h5
    output: str = "scores.csv"  # "-": standard output
    summary: Path | None = None  # None: <output stem>.summary.csv (none with -o -)
    methods: list[str] = option(factory=list, config=True)
    measures: list[str] = option(factory=list, config=True)
    frameworks: list[str] = option(factory=list, config=True)
    target: str = option("dice", config=True)
    model: Path | None = option(None, config=True)  # predict with this quality.pt instead of fitting
    save_model: Path = Path("quality.pt")
    cv: int = option(5, config=True)
    backbone: str = option("resnet18", config=True)
    pretrained: bool = option(False, config=True)
    input_size: list[int] | str | None = option(None, config=True)  # "192x256" or [192, 256]; None: 128 / 64 (3D)
    epochs: int | None = option(None, config=True)  # None: the framework's default (FIT_DEFAULTS)
    patience: int = option(6, config=True)
    val_fraction: float | None = option(None, config=True)  # None: the framework's default
    lr: float | None = option(None, config=True)  # None: the framework's default
    loss: str = option("mse", config=True)
    init_from: str = option("auto", config=True)  # auto, none or a segmenter checkpoint
    feature_models: list[str] = option(factory=list, config=True)
    agreement_channel: bool = option(False, config=True)
    fold_ensemble: bool = option(False, config=True)  # new cases: mean of the K fold CNNs and the final one
    vote_level_pairs: bool = option(False, config=True)  # extra training pairs (quality/level_pairs.py)
    learn_mask: bool | None = option(None, config=True)  # a mask regressor; None: where it starts from the segmenter
    critic_head: str = option("blend", config=True)  # critic_head.CRITIC_HEADS
    critic_tta: int = option(1, config=True)  # symmetries a critic's probabilities are averaged over (1-8)
    batch_size: int = option(16, config=True)
    features: Path | None = option(None, config=True)  # a long feature table of `aggregate` instead of computing it
    include_train_cases: bool = option(False, config=True)
    failure_threshold: float | None = option(None, config=True)
    seed: int = option(0, config=True)
    overwrite: bool = False
    device: str = "auto"  # auto, cpu, cuda or cuda:N (the CLI checks it against the machine)
    threads: int = 0

    def __post_init__(self) -> None:
        self.output = str(self.output)
        self.save_model = Path(self.save_model)
        for name in ("input", "summary", "model", "features"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if self.target not in TARGETS:
            raise UqsegError(f"--target {self.target!r}: choose dice or iou")
        if self.input_size is not None and not isinstance(self.input_size, str):
            self.input_size = "x".join(str(v) for v in self.input_size)
        self.input_size = parse_size(self.input_size, "--input-size", minimum=8)
        bad = [f for f in self.frameworks if f not in FRAMEWORKS]
        if bad:
            raise UqsegError(f"--framework {','.join(bad)}: choose from {', '.join(FRAMEWORKS)}")
        bad = [k for k in self.feature_models if k not in ALL_FEATURE_MODELS]
        if bad:
            raise UqsegError(f"--feature-models {','.join(bad)}: choose from {', '.join(ALL_FEATURE_MODELS)}")
        if self.loss not in LOSSES:
            raise UqsegError(f"--loss {self.loss!r}: choose from {', '.join(LOSSES)}")
        if not 1 <= int(self.critic_tta) <= 8:
            raise UqsegError(f"--critic-tta {self.critic_tta}: choose 1 to 8 (flips and quarter turns)")
        if self.critic_head not in CRITIC_HEADS:
            raise UqsegError(f"--critic-head {self.critic_head!r}: choose from {', '.join(CRITIC_HEADS)}")

    @property
    def summary_path(self) -> Path | None:
        """--summary, else ``<output stem>.summary.csv`` (none with ``-o -``)."""
        if self.summary is not None:
            return self.summary
        return None if self.output == "-" else Path(self.output).with_name(f"{Path(self.output).stem}.summary.csv")

    def fit_config(self, framework: str, mask: bool = False) -> FitConfig:
        """The training options of one CNN framework (``mask``: a mask regressor): what was given, else
        :data:`FIT_DEFAULTS`."""
        key = "critic" if framework == "critic" else "seg-unc mask" if (mask and framework == "seg-unc") else "cnn"
        d = FIT_DEFAULTS[key]
        given = {"epochs": self.epochs, "val_fraction": self.val_fraction, "lr": self.lr}
        return FitConfig(patience=self.patience, batch_size=self.batch_size, seed=self.seed,
                         pretrained=self.pretrained, loss=self.loss,
                         **{k: d[k] if v is None else v for k, v in given.items()})


APPLIES_TO = (
    (("critic",), ("critic_head", "critic_tta")),
    (("seg-unc", "img-seg-unc", "hybrid"), ("loss", "agreement_channel", "fold_ensemble", "learn_mask")),
    (PAIR_FRAMEWORKS, ("vote_level_pairs",)),
    (("seg-unc", "img-seg-unc", "hybrid", "critic"),
     ("backbone", "pretrained", "input_size", "epochs", "patience", "val_fraction", "lr", "init_from")),
)
"""``(frameworks, the fitting options only they read)`` (see :func:`ignored_options`)."""


def ignored_options(options: ScoreOptions, frameworks: list[str], loaded: bool) -> list[str]:
    """The ``--flags`` given a non-default value that nothing in this run reads: fitting options with ``--model``,
    critic options without the critic framework, CNN options without a CNN framework."""
    default = ScoreOptions()
    out = []
    for readers, names in APPLIES_TO:
        if loaded or not set(readers) & set(frameworks):
            out += [f"--{'no-' if getattr(options, n) is False else ''}{n.replace('_', '-')}" for n in names
                    if getattr(options, n) != getattr(default, n)]
    if loaded and options.feature_models:
        out.append("--feature-models")
    return out


@dataclass
class Plan:
    """What the run does once ``--model`` is read: the target, the methods, measures and frameworks asked (with a
    model: its own), and the loaded model (None: fit)."""

    target: str
    methods: list[str]
    measures: list[str]
    frameworks: list[str]
    loaded: dict | None = None


@dataclass
class Inputs:
    """What was read: every case id, the configurations (``methods`` × ``measures``), the measures of the file,
    the batch of readable cases (features, target, labelled mask), the combined-score scale, unreadable cases."""

    ids: list[str]
    methods: list[str]
    measures: list[str]
    all_measures: list[str]
    batch: Batch
    combined_stats: CombinedStats | None
    failed: dict[str, str]


@dataclass
class Fitted:
    """Rows of scores.csv, the detail of every prediction (summary column), the quality models saved."""

    frames: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)
    saved: list[str] = dataclasses.field(default_factory=list)


def model_path_for(save: Path, n_configs: int, method: str, measure: str, framework: str) -> Path:
    """``quality.pt`` for one configuration, ``quality.<method>.<measure>.<framework>.pt`` for several."""
    if n_configs == 1:
        return save
    return save.with_name(f"{save.stem}.{method}.{measure}.{framework}{save.suffix}")


# --- configuration -------------------------------------------------------------------------------------------------


def resolve_plan(options: ScoreOptions, report: Report) -> Plan:
    """The options as asked, or, with ``--model``, the model's method, measure, framework and target (a different
    method, measure or framework asked is refused)."""
    frameworks = options.frameworks or ["features"]
    if options.model is None:
        return Plan(options.target, list(options.methods), list(options.measures), frameworks)
    loaded = read_quality_checkpoint(options.model)
    meta: QualityMeta = loaded["meta"]
    for opt, given, have in (("--method", options.methods, meta.method),
                             ("--measure", options.measures, meta.measure)):
        if given and given != [have]:
            raise UqsegError(f"{opt} {','.join(given)}: {options.model} was fitted for {opt} {have}")
    if options.frameworks and frameworks != [meta.framework]:
        raise UqsegError(f"--framework {','.join(frameworks)}: {options.model} is a {meta.framework} model")
    target = options.target
    if meta.target != target:
        report.log(f"using the model's target {meta.target!r}")
        target = meta.target
    return Plan(target, [meta.method], [meta.measure], [meta.framework], loaded)


def resolve_configurations(sf: StageFile, plan: Plan, src: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """``(case ids, methods, measures, measures of the file)``: the configurations to score, checked against the
    file (``joint`` for the features framework only; ``all`` = each measure and combined)."""
    joint = plan.methods == [ALL_METHODS]
    ids, methods, all_measures = pick_methods_measures(sf, None if joint else plan.methods, None)
    if joint:
        if any(f != "features" for f in plan.frameworks):
            raise UqsegError("--method joint (every method's features side by side) works with --framework "
                             "features only")
        methods = [ALL_METHODS]
    else:
        warn_unequal_T(sf, ids, methods)
    wanted = plan.measures or [COMBINED]
    if "all" in wanted:
        wanted = [*all_measures, COMBINED]
    bad = [m for m in wanted if m != COMBINED and m not in all_measures]
    if bad:
        raise UqsegError(f"--measure {','.join(bad)}: not in {src} (it has {', '.join(all_measures)}, or combined)")
    return ids, methods, wanted, all_measures


def sample_counts(sf: StageFile, case_id: str, methods: list[str]) -> dict[str, int]:
    """Samples T per method (samples.h5's groups of ``case_id``, else its config), for the methods known."""
    out: dict[str, int] = {}
    try:
        samples = sf.upstream("sample")
    except Exception:
        return out
    for m in methods:
        g = samples.h5.get(f"cases/{case_id}/{m}")
        t = g.attrs.get("T") if g is not None else None
        if t is None:
            t = (samples.config.get("T") or {}).get(m)
        if t is not None:
            out[m] = int(t)
    return out


def warn_unequal_T(sf: StageFile, ids: list[str], methods: list[str]) -> None:
    """Guard rail: methods drawn with different numbers of samples T compared in one score (one line)."""
    ts = sample_counts(sf, ids[0], methods) if ids and len(methods) > 1 else {}
    if len(set(ts.values())) > 1:
        counts = ", ".join(f"{m} T={t}" for m, t in ts.items())
        warn(f"methods with different sample counts are compared in one score ({counts}): "
             "uncertainty estimates from fewer samples are noisier, so part of any difference between them is T "
             "(sample again with equal -T, or score each method on its own)")


# --- inputs --------------------------------------------------------------------------------------------------------


def read_inputs(sf: StageFile, plan: Plan, options: ScoreOptions, src: Path, report: Report) -> Inputs:
    """Features (computed, or the ``--features`` table), the combined score (on the model's scale with
    ``--model``), the target of every readable case and which cases are labelled."""
    ids, methods, wanted, all_measures = resolve_configurations(sf, plan, src)
    prog = Progress(len(ids), "score: reading", quiet=report.quiet)
    try:
        read = sf.case(ids[0]).keys() if methods == [ALL_METHODS] else methods
        got = collect_features(
            sf, ids, read, all_measures, RegionParams(), with_quality=True, progress=prog, with_hd95=False,
            with_features=options.features is None,  # a --features table replaces the aggregation
        )
    finally:
        prog.close()
    if options.features is not None:
        long = read_table(options.features, required=["case", "method", "measure", "region", "value"])
        long["case"] = long["case"].astype(str)
    else:
        long = got.long
    saved_stats = None
    if plan.loaded is not None and plan.loaded["meta"].combined_stats:
        saved_stats = CombinedStats.from_json(plan.loaded["meta"].combined_stats)
    long, combined_stats = with_combined(long, all_measures, saved_stats)
    ok_ids = [c for c in ids if c not in got.failed]
    if not ok_ids:
        raise InputError(f"{src}: no case could be read")
    q = got.quality.set_index("case")
    target = plan.target
    tgt = np.array([q[target].get(c, np.nan) if target in q else np.nan for c in ok_ids], dtype=np.float64)
    batch = Batch(ok_ids, tgt, np.array([got.train_case.get(c, False) for c in ok_ids]), long, all_measures)
    batch.set_labelled(options.include_train_cases)
    seen = int((np.isfinite(tgt) & batch.train_case).sum())
    if seen:
        what = "fitted on and summarised (--include-train-cases)" if options.include_train_cases else (
            "NOT fitted on nor summarised (pass --include-train-cases to use them)"
        )
        warn(f"{seen} case(s) with a reference were in the segmenter's training set (train_case in the "
             f"predict file): their Dice is optimistic; they are {what}")
    return Inputs(ids, methods, wanted, all_measures, batch, combined_stats, got.failed)


def plan_folds(inputs: Inputs, plan: Plan, options: ScoreOptions, src: Path) -> np.ndarray | None:
    """The cross-fitting folds (None: no cross-fitting); refuses to fit on fewer than 3 labelled cases or on fewer
    than ``cv``, and says when a CNN has too few to learn from."""
    n_lab = int(inputs.batch.labelled.sum())
    cv = options.cv
    if plan.loaded is None:
        if n_lab < 3:
            raise InputError(
                f"{src}: {n_lab} case(s) with a usable reference; fitting a quality model needs at least 3 "
                f"(or pass --model to predict with an existing one)"
            )
        if cv >= 2 and n_lab < cv:
            raise UqsegError(f"--cv {cv}: only {n_lab} labelled case(s); use --cv {max(n_lab, 2)} or fewer folds")
    cnns = [f for f in plan.frameworks if f != "features"]
    if plan.loaded is None and cnns and n_lab < CNN_MIN_LABELLED:
        warn(f"{n_lab} labelled case(s): below {CNN_MIN_LABELLED} a CNN regressor ({', '.join(cnns)}) does not "
             "learn reliably and rarely beats the features regressor; use --framework features")
    folds = make_folds(inputs.batch, cv, options.seed) if cv >= 2 and n_lab >= max(cv, 3) else None
    if plan.loaded is None and folds is None:
        warn("no cross-fitting (--cv < 2): labelled cases get in-sample predictions and no honest summary")
    return folds


def folds_any(batch: Batch, cv: int, seed: int):
    """Folds for the baseline in --model mode (the baseline is always cross-fitted on the labelled cases)."""
    n = int(batch.labelled.sum())
    k = cv if cv >= 2 else 5
    return make_folds(batch, min(k, n), seed) if n >= 3 else None


# --- fitting -------------------------------------------------------------------------------------------------------


def fit_features(inputs: Inputs, method: str, measure: str, folds, options: ScoreOptions, target: str,
                 path: Path) -> list[Prediction]:
    """The feature regressors of one configuration (one prediction per kind), saved together to ``path``."""
    batch = inputs.batch
    preds: list[Prediction] = []
    arrays, fmeta = {}, None
    for kind in options.feature_models or list(FEATURE_MODELS):
        p = predict_features(batch, method, measure, kind, folds, options.seed)
        preds.append(p)
        arrays.update(p.arrays)
        fmeta = p.model_meta
    meta = dataclasses.replace(
        fmeta, target=target,
        combined_stats=inputs.combined_stats.to_json() if inputs.combined_stats else None,
        train_cases=[c for c, ok in zip(batch.case_ids, batch.labelled, strict=True) if ok],
    )
    save_quality_model(path, meta, arrays=arrays)
    return preds


def fit_cnn(sf: StageFile, inputs: Inputs, framework: str, method: str, measure: str, folds, cfg: FitConfig, dev,
            options: ScoreOptions, target: str, path: Path, report: Report,
            fitprog: FitProgress | None) -> Prediction:
    """The CNN regressor (or critics) of one configuration, cross-fitted, saved to ``path``; returns its prediction.
    ``cfg`` gains the segmenter's weights as the start when ``--init-from`` gives one."""
    batch = inputs.batch
    ok_ids = batch.case_ids
    extra = feature_names(measure, inputs.all_measures, for_baseline=False, available=batch.available)
    meta = cnn_meta(sf.case(ok_ids[0]), framework, method, measure, inputs.all_measures, options.backbone,
                    options.input_size, target, options.pretrained, num_classes(sf, ok_ids[0]),
                    agreement=options.agreement_channel, extra_features=extra)
    if framework == "critic":  # refused before anything is read
        if folds is None:
            raise UqsegError("--framework critic needs cross-fitting (--cv 2 or more): its regressor learns from "
                             "out-of-fold critic features")
        critic_arch(meta)
    elif options.learn_mask and (why := mask_problem(meta)):
        raise UqsegError(f"--learn-mask: {why}")
    init = segmenter_init(sf, options.init_from, meta, report.quiet)
    if init is not None:
        meta = dataclasses.replace(meta, init_from=init[0])
        cfg = dataclasses.replace(cfg, init_state=init[1])
    if framework != "critic":
        meta = mask_choice(meta, options.learn_mask, init is not None, report.quiet)
        if meta.learn_mask:
            cfg = dataclasses.replace(options.fit_config(framework, mask=True), init_state=cfg.init_state)
    x_raw = read_raw(sf, ok_ids, meta, f"score: inputs {method}/{measure}/{framework}", report.quiet)
    masks = None
    if framework == "critic" or meta.learn_mask:
        masks = load_masks(sf, [c for c, ok in zip(ok_ids, batch.labelled, strict=True) if ok], meta.input_size)
    if framework == "critic":
        p = predict_critic_framework(batch, x_raw, masks, meta, folds, cfg, dev, progress=fitprog,
                                     head=options.critic_head, tta=options.critic_tta)
        p.model_meta = dataclasses.replace(
            p.model_meta, segmenter=segmenter_info(sf),
            combined_stats=inputs.combined_stats.to_json() if inputs.combined_stats else None,
        )
        save_quality_model(path, p.model_meta, arrays=p.arrays, state_dict=p.state_dict)
        return p
    pairs = None
    if options.vote_level_pairs and framework in PAIR_FRAMEWORKS:
        rows = np.flatnonzero(batch.labelled)
        pairs = read_pairs(sf, [ok_ids[i] for i in rows], rows, meta, target, report.quiet)
    p = predict_cnn_framework(batch, x_raw, meta, folds, cfg, dev, log=None if report.quiet else (lambda s: log(s)),
                              progress=fitprog, fold_ensemble=options.fold_ensemble, pairs=pairs, masks=masks)
    p.model_meta = dataclasses.replace(p.model_meta, segmenter=segmenter_info(sf))
    save_quality_model(path, p.model_meta, p.model, state_dict=p.state_dict)
    return p


def mask_problem(meta: QualityMeta) -> str | None:
    """Why no mask regressor (quality/mask_regressor.py) can be built for ``meta``; None when one can."""
    if meta.dims != 2:
        return "the mask regressor is 2D (fpn-<backbone>); these cases are 3D"
    return missing_fpn(str(meta.backbone))


def mask_choice(meta: QualityMeta, asked: bool | None, from_segmenter: bool, quiet: bool) -> QualityMeta:
    """``--learn-mask`` (checked by :func:`mask_problem` when asked for): True, a mask regressor; False, the plain
    regression CNN; None (the default), a mask regressor where one can be built *and* starts from the segmenter's
    weights (``from_segmenter``), else the plain CNN with a line saying why. Why the start matters: the held-out
    gain was measured from the segmenter (ISIC, docs/quality.md); from random weights on the demo's 68 cases it fell
    below the plain CNN (R² −0.32 vs −0.04)."""
    if asked is False or (asked is None and meta.dims != 2):  # 3D cases have only the plain CNN: nothing to say
        return meta
    why = mask_problem(meta) if asked is None else None
    if why is None and asked is None and not from_segmenter:
        why = "no segmenter weights to start from (--init-from)"
    if why is not None:
        log(f"{why}: a plain regression CNN instead of a mask regressor (--learn-mask)", quiet)
        return meta
    return dataclasses.replace(meta, learn_mask=True)


def read_raw(sf: StageFile, case_ids: list[str], meta: QualityMeta, label: str, quiet: bool):
    """The CNN's raw inputs of every case (an unreadable case stops the run with one line)."""
    prog = Progress(len(case_ids), label, quiet=quiet)
    try:
        return load_raw(sf, case_ids, meta, prog)
    except CaseError as exc:
        raise InputError(str(exc)) from None
    finally:
        prog.close()


def read_pairs(sf: StageFile, case_ids: list[str], rows, meta: QualityMeta, target: str, quiet: bool) -> LevelPairs:
    """The vote-level pairs of the labelled cases (a case without vote counts stops the run with one line)."""
    prog = Progress(len(case_ids), f"score: vote-level pairs {meta.method}", quiet=quiet)
    try:
        return read_level_pairs(sf, case_ids, rows, meta, target, prog)
    except CaseError as exc:
        raise InputError(str(exc)) from None
    finally:
        prog.close()


def fit_all(sf: StageFile, inputs: Inputs, plan: Plan, folds, options: ScoreOptions, report: Report) -> Fitted:
    """Every configuration: fitted (or predicted by the loaded model), with the baseline next to it."""
    frameworks = plan.frameworks
    n_configs = len(inputs.methods) * len(inputs.measures) * len(frameworks)
    n_cnn = len(inputs.methods) * len(inputs.measures) * len([f for f in frameworks if f != "features"])
    k = int(folds.max()) + 1 if folds is not None else 0
    # a CNN regressor: one fit per fold + the final model; the critic framework: one critic per fold
    per_config = [k + (fw != "critic") for fw in frameworks if fw != "features"]
    n_fits = 0 if plan.loaded is not None else len(inputs.methods) * len(inputs.measures) * sum(per_config)
    most = max((options.fit_config(fw).epochs for fw in frameworks if fw != "features"), default=0)
    if n_fits:
        report.log(f"fitting {n_fits} CNN quality model(s) of at most {most} epochs "
                   f"({n_cnn} configuration(s): a fit per cross-fitting fold + the final model; critics: one a fold)")
    fitprog = FitProgress(n_fits, most, "score: fits", quiet=report.quiet) if n_fits else None
    dev = resolve_device(options.device)
    out = Fitted()
    try:
        for m in inputs.methods:
            for meas in inputs.measures:
                preds: list[Prediction] = []
                for fw in frameworks:
                    if plan.loaded is not None:
                        preds.extend(predict_loaded(sf, inputs.batch, plan.loaded, dev, options.batch_size,
                                                    report.quiet, options.model))
                        continue
                    path = model_path_for(options.save_model, n_configs, m, meas, fw)
                    if fw == "features":
                        preds.extend(fit_features(inputs, m, meas, folds, options, plan.target, path))
                    else:
                        preds.append(fit_cnn(sf, inputs, fw, m, meas, folds, options.fit_config(fw), dev, options,
                                             plan.target, path, report, fitprog))
                    out.saved.append(str(path))
                base_folds = folds if plan.loaded is None else folds_any(inputs.batch, options.cv, options.seed)
                base = predict_baseline_cv(inputs.batch, m, meas, base_folds)
                if base is not None:
                    preds.append(base)
                for p in preds:
                    out.frames.append(score_rows(inputs.batch, m, meas, p, plan.target))
                    out.details[(m, meas, p.framework)] = p.detail
    finally:
        if fitprog is not None:
            fitprog.close()
    return out


def num_classes(sf: StageFile, case_id: str) -> int:
    from uqseg_cli.quality.regions import num_classes_of

    return num_classes_of(sf.case(case_id))


def segmenter_init(sf: StageFile, spec: str, meta: QualityMeta, quiet: bool) -> tuple[str, dict] | None:
    """``(path, state_dict)`` of the segmenter whose encoder starts the CNN, or None (``--init-from``)."""
    from uqseg_cli.models.checkpoint import read_checkpoint

    if spec == "none" or meta.dims != 2:
        return None
    if spec == "auto":
        info = segmenter_info(sf)
        if "checkpoint" not in info:
            return None
        path = Path(info["checkpoint"])
        if not path.is_absolute():
            path = Path(info["predict_file"]).parent / path
        if not path.exists():
            log(f"--init-from auto: segmenter {path} not found; the CNN starts from random weights", quiet)
            return None
    else:
        path = Path(spec)
    ck, state = read_checkpoint(path)
    backbone = ck.arch[len("fpn-"):] if ck.arch.startswith("fpn-") else None  # fpn-<timm backbone>
    if backbone != meta.backbone:
        msg = f"--init-from: {path} has backbone {backbone!r}, the CNN {meta.backbone!r}"
        if spec != "auto":
            raise UqsegError(msg)
        log(f"{msg}: the CNN starts from random weights", quiet)
        return None
    log(f"CNN backbone starts from the encoder of {path}", quiet)
    return str(path), state


def segmenter_info(sf: StageFile) -> dict:
    """The segmenter recorded in the predict file upstream (path, fingerprint, checkpoint, ...; {} if none)."""
    try:
        pred = sf.upstream("predict")
    except Exception:
        return {}
    cfg = pred.config
    names = ("checkpoint", "arch", "checkpoint_fingerprint", "class_names", "out_of_fold")
    keep = {k: cfg[k] for k in names if k in cfg}
    return {"predict_file": str(pred.path), "predict_fingerprint": pred.fingerprint, **keep}


# --- a saved model (--model) ---------------------------------------------------------------------------------------


def predict_loaded(sf: StageFile, batch: Batch, loaded: dict, dev, batch_size: int, quiet: bool,
                   path: Path | None = None) -> list[Prediction]:
    """Predictions of a loaded ``quality.pt`` (read from ``path``); cases it was fitted on are marked
    ``split="train"``; weights that do not match its meta stop the run with one line."""
    from uqseg_cli.quality.inputs import standardize
    from uqseg_cli.quality.training import standardize_extra

    meta: QualityMeta = loaded["meta"]
    trained_on = set(meta.train_cases or [])
    overlap = [c for c in batch.case_ids if c in trained_on]
    if overlap:
        warn(f"{len(overlap)} case(s) were in the quality model's own training set (e.g. {overlap[0]}): "
             "their predictions are in-sample (split=train) and not summarised")
    split = np.array(["train" if c in trained_on else "test" for c in batch.case_ids], dtype=object)
    if meta.framework == "features":
        preds = predict_features_loaded(batch, meta.method, meta, loaded["arrays"])
        for p in preds:
            p.split = split
        return preds
    try:  # the weights first, then the inputs (a damaged file fails at once)
        nets = (load_critics if meta.framework == "critic" else load_quality_models)(meta, loaded["state_dict"])
        head = critic_head_of(loaded["arrays"]) if meta.framework == "critic" else None
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: weights do not match the model described in it: {exc}") from None
    x_raw = read_raw(sf, batch.case_ids, meta, "score: inputs", quiet)
    if meta.framework == "critic":
        pred = predict_critic_loaded(batch, x_raw, meta, nets, loaded["arrays"], batch_size, dev)
        return [Prediction(meta.framework, pred, split, detail=f"loaded {meta.critics} critics + {HEAD_DETAIL[head]}")]
    # the final model, then a fold ensemble's fold models
    x, z = standardize(x_raw, meta), standardize_extra(hybrid_features(batch, meta), meta)
    pred = sum(predict_cnn(net.to(dev), x, batch_size, dev, z=z) for net in nets) / len(nets)
    detail = f"loaded {meta.backbone}" + (f", mean of {len(nets)} models" if len(nets) > 1 else "")
    return [Prediction(meta.framework, pred, split, detail=detail)]


# --- outputs -------------------------------------------------------------------------------------------------------


def report_summary(summ: pd.DataFrame, quiet: bool) -> None:
    """A warning for every regressor that does not beat the baseline; the summary table on stderr."""
    for r in summ.itertuples():
        if r.beats_baseline is False:
            warn(f"{r.method}/{r.measure}/{r.framework}: R² {r.r2:.3f} does not beat the best single feature "
                 f"({r.method}/{r.measure}/baseline); do not rely on this regressor")
    if quiet or summ.empty:
        return
    lines = ["method/measure/framework                      n     R2  Pearson Spearman    MAE   AURC"]
    for r in summ.itertuples():
        name = f"{r.method}/{r.measure}/{r.framework}"
        lines.append(
            f"{name:<44} {r.n:>3} {r.r2:>6.3f} {r.pearson:>8.3f} {r.spearman:>8.3f} {r.mae:>6.3f} {r.aurc:>6.3f}"
        )
    print("\n".join(lines), file=sys.stderr)


def write_scores(fitted: Fitted, plan: Plan, options: ScoreOptions, report: Report) -> pd.DataFrame:
    """scores.csv and the summary CSV; returns the summary."""
    scores = pd.concat(fitted.frames, ignore_index=True)
    summ = summary_rows(scores, plan.target, fitted.details, options.failure_threshold, options.include_train_cases)
    write_table(scores, options.output)
    if options.summary_path is not None:
        write_table(summ, options.summary_path)
    report_summary(summ, report.quiet)
    return summ


def run(options: ScoreOptions, report: Report | None = None) -> StageResult:
    """Score every case of ``options.input`` (an uncertainty.h5): scores.csv, its summary and the quality models."""
    report = report or Report()
    apply_threads(options.threads)
    src = input_or_default(options.input, *PARENT[1:])
    s_path = options.summary_path
    for p in (options.output, s_path):
        if p is not None:
            check_writable(p, options.overwrite)
    plan = resolve_plan(options, report)
    ignored = ignored_options(options, plan.frameworks, plan.loaded is not None)
    if ignored:
        what = f"--model {options.model} (nothing is fitted)" if plan.loaded is not None else (
            f"--framework {','.join(plan.frameworks)}")
        warn(f"{', '.join(ignored)} do{'es' if len(ignored) == 1 else ''} not apply to {what}: ignored")
    with StageFile(src, expect_stage=PARENT[0]) as sf:
        inputs = read_inputs(sf, plan, options, src, report)
        folds = plan_folds(inputs, plan, options, src)
        fitted = fit_all(sf, inputs, plan, folds, options, report)
    summ = write_scores(fitted, plan, options, report)
    ok_ids = inputs.batch.case_ids
    n_lab = int(inputs.batch.labelled.sum())
    if fitted.saved:
        report.log(f"quality model(s) -> {', '.join(fitted.saved)}")
    report.log(f"scored {len(ok_ids)} case(s) ({n_lab} labelled) -> {options.output}")
    summary = {
        "input": str(src), "output": str(options.output), "summary_csv": str(s_path) if s_path else None,
        "target": plan.target, "cv": options.cv if folds is not None else 0, "n_cases": len(ok_ids),
        "n_labelled": n_lab, "models": fitted.saved, "failed": inputs.failed,
        "summary": json.loads(summ.to_json(orient="records")),
    }
    return StageResult(out=Path(options.output), done=list(ok_ids), failed=dict(inputs.failed), summary=summary)
