"""Orchestration of ``uqseg score``: fit or load quality regressors, cross-fit, predict, summarise.

Terms: *labelled* cases have a reference and (unless allowed) were not seen by the segmenter; they are the only
cases ever fitted on. With ``cv >= 2`` each labelled case gets an out-of-fold prediction (``split="oof"``) and a final
model fitted on all labelled cases predicts the rest (``split="test"``) and is the one saved; with ``cv < 2`` the
final model also predicts its own training cases (``split="train"``, in-sample, excluded from the summary). A loaded
model (``--model``) predicts every case (``split="test"``). The baseline (best single aggregated feature, linear fit)
is always cross-fitted on the labelled cases with the same folds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from uqseg_cli.metrics.regression import regression_summary
from uqseg_cli.quality.combined import CombinedStats, add_combined
from uqseg_cli.quality.critic import (
    CRITIC_FEATURES,
    critic_arch,
    critics_state,
    fit_critic,
    predict_critic_features,
    reference_grid,
    tta_transforms,
)
from uqseg_cli.quality.critic_head import HEAD_DETAIL, fit_critic_head, predict_critic_head
from uqseg_cli.quality.crossfit import assign_folds, cross_fit
from uqseg_cli.quality.features import (
    fit_baseline,
    fit_feature_model,
    predict_baseline,
    predict_feature_model,
)
from uqseg_cli.quality.inputs import IMAGE_FRAMEWORKS, channel_names, channel_stats, raw_inputs, standardize
from uqseg_cli.quality.level_pairs import LevelPairs
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import FOLD_PREFIX, prefixed_state
from uqseg_cli.quality.regions import AGREEMENT_REGIONS, REGIONS, SHAPE_REGIONS, VOLUME_REGIONS, feature_matrix
from uqseg_cli.quality.training import FitConfig, extra_stats, fit_cnn, predict_cnn, standardize_extra
from uqseg_cli.rng import case_seed

COMBINED = "combined"
ALL_METHODS = "joint"
"""``--method joint`` (feature regressors only): the features of every sampling method side by side, named
``<method>:<measure>/<region>``."""
SUMMARY_COLUMNS = [
    "method", "measure", "framework", "n", "r2", "pearson", "spearman", "mae", "aurc", "beats_baseline", "detail",
]
CNN_MIN_LABELLED = 300
"""Below this many labelled cases a CNN regressor does not learn reliably (PH2, 100 cases: below the features
regressor, seed sd of R² ≈ 0.1); ``score`` says so and recommends ``--framework features``."""


@dataclass
class Batch:
    """Everything ``score`` knows about the cases: ids, targets (nan without reference), train flags, features."""

    case_ids: list[str]
    target: np.ndarray  # (n,) true quality, nan where there is no reference
    train_case: np.ndarray  # (n,) bool: the segmenter saw the case
    long: pd.DataFrame  # aggregated features (long), incl. the combined score
    measures: list[str]  # all measures available
    labelled: np.ndarray = field(init=False)

    @property
    def methods(self) -> list[str]:
        """The sampling methods present in ``long``, sorted."""
        return sorted(self.long["method"].unique())

    @property
    def available(self) -> set[str]:
        """The ``measure/region`` features present in ``long``."""
        return set((self.long["measure"] + "/" + self.long["region"]).unique())

    def set_labelled(self, include_train_cases: bool) -> None:
        ok = np.isfinite(self.target)
        self.labelled = ok if include_train_cases else ok & ~self.train_case


EXTRA_FEATURES: tuple[str, ...] = tuple(
    [f"agreement/{r}" for r in AGREEMENT_REGIONS] + [f"shape/{r}" for r in SHAPE_REGIONS]
)


def feature_names(
    measure: str, measures: Sequence[str], for_baseline: bool, available: set[str] | None = None
) -> list[str]:
    """Aggregated features used for ``measure`` (``"combined"`` = all measures, their combined score, volumes,
    agreement and shape features).

    A single measure uses its five region scores (plus the volume, agreement and shape scores as regressor input,
    not as baseline). ``available`` (the features present) drops agreement/shape features a file does not have."""
    ms = list(measures) if measure == COMBINED else [measure]
    names = [f"{m}/{r}" for m in ms for r in REGIONS]
    if measure == COMBINED:
        names.append(f"{COMBINED}/foreground")
    if measure == COMBINED or not for_baseline:
        names += [f"volume/{r}" for r in VOLUME_REGIONS]
        names += [n for n in EXTRA_FEATURES if available is None or n in available]
    return names


def method_feature_names(batch: Batch, method: str, names: Sequence[str]) -> list[str]:
    """``names`` as they are for one method; for ``joint``, one copy per method, prefixed ``<method>:``."""
    if method != ALL_METHODS:
        return list(names)
    return [f"{m}:{n}" for m in batch.methods for n in names]


def method_matrix(long: pd.DataFrame, method: str, names: Sequence[str], cases: Sequence[str]) -> np.ndarray:
    """:func:`feature_matrix` that also reads ``<method>:<feature>`` names (``--method joint``)."""
    if method != ALL_METHODS:
        return feature_matrix(long, method, names, cases)
    out = np.full((len(cases), len(names)), np.nan)
    by_method: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        by_method.setdefault(n.partition(":")[0], []).append(j)
    for m, cols in by_method.items():
        out[:, cols] = feature_matrix(long, m, [names[j].partition(":")[2] for j in cols], cases)
    return out


def with_combined(
    long: pd.DataFrame, measures: Sequence[str], stats: CombinedStats | None = None
) -> tuple[pd.DataFrame, CombinedStats | None]:
    """The long table plus the label-free equal-weight combined score of the foreground means.

    With ``stats`` (saved in a features model), existing combined rows are replaced by the score on that scale;
    without, rows already present (e.g. from a ``--features`` table) are kept as they are and ``None`` returned.
    """
    if stats is not None:
        base = long[long["measure"] != COMBINED]
        region = stats.features[0].split("/", 1)[1] if stats.features else "foreground"
        return add_combined(base, stats.features, region, stats=stats)
    if (long["measure"] == COMBINED).any():
        return long, None
    return add_combined(long, [f"{m}/foreground" for m in measures], "foreground")


def fold_seed(seed: int, fold: int | str, tag: str) -> int:
    return case_seed(seed, f"fold{fold}", tag) & 0x7FFFFFFF


@dataclass
class Prediction:
    """Predictions of one (method, measure, framework): per case, with split labels and a detail string; a fitted
    model's meta (features: the feature names; CNN: all but the segmenter), weights or exported arrays."""

    framework: str
    predicted: np.ndarray
    split: np.ndarray
    detail: str = ""
    model_meta: QualityMeta | None = None
    model: torch.nn.Module | None = None
    arrays: dict | None = None
    state_dict: dict | None = None  # weights of several networks (the critic framework)


def _splits(batch: Batch, folds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the labelled cases and the split label of every case: labelled cases are ``oof`` when
    cross-fitted, else ``train`` (the final model saw them); all others are ``test``."""
    split = np.full(len(batch.case_ids), "test", dtype=object)
    lab = np.flatnonzero(batch.labelled)
    split[lab] = "oof" if folds is not None else "train"
    return lab, split


def predict_features(
    batch: Batch, method: str, measure: str, kind: str, folds: np.ndarray | None, seed: int
) -> Prediction:
    """Feature-regression framework (``kind`` linear or forest), cross-fitted when ``folds`` is given."""
    names = feature_names(measure, batch.measures, for_baseline=False, available=batch.available)
    names = method_feature_names(batch, method, names)
    x = method_matrix(batch.long, method, names, batch.case_ids)
    y = batch.target
    lab, split = _splits(batch, folds)
    pred = np.full(len(batch.case_ids), np.nan)
    if folds is not None:

        def fp(train, test, f):
            state = fit_feature_model(kind, x[lab[train]], y[lab[train]], seed)
            return predict_feature_model(kind, state, x[lab[test]])

        pred[lab] = cross_fit(folds, fp)
    state = fit_feature_model(kind, x[lab], y[lab], seed)
    rest = np.flatnonzero(split != "oof")
    pred[rest] = predict_feature_model(kind, state, x[rest])
    meta = QualityMeta(framework="features", method=method, measure=measure, features=names)
    return Prediction(f"features-{kind}", pred, split, detail=f"{len(names)} features", model_meta=meta,
                      arrays={kind: state})


def predict_features_loaded(batch: Batch, method: str, meta: QualityMeta, arrays: dict) -> list[Prediction]:
    x = method_matrix(batch.long, method, meta.features, batch.case_ids)
    out = []
    for kind, state in arrays.items():
        split = np.full(len(batch.case_ids), "test", dtype=object)
        out.append(Prediction(f"features-{kind}", predict_feature_model(kind, state, x), split, detail="loaded"))
    return out


def predict_baseline_cv(batch: Batch, method: str, measure: str, folds: np.ndarray | None) -> Prediction | None:
    """Best single feature (chosen and fitted inside each training fold), out-of-fold on the labelled cases."""
    names = feature_names(measure, batch.measures, for_baseline=True, available=batch.available)
    names = method_feature_names(batch, method, names)
    x = method_matrix(batch.long, method, names, batch.case_ids)
    lab = np.flatnonzero(batch.labelled)
    if folds is None or len(lab) < 3:
        return None
    y = batch.target
    chosen: list[str] = []

    def fp(train, test, f):
        st = fit_baseline(x[lab[train]], y[lab[train]])
        chosen.append(names[int(st["feature"][0])])
        return predict_baseline(st, x[lab[test]])

    pred = np.full(len(batch.case_ids), np.nan)
    pred[lab] = cross_fit(folds, fp)
    split = np.full(len(batch.case_ids), "none", dtype=object)
    split[lab] = "oof"
    top = pd.Series(chosen).value_counts()
    detail = f"{top.index[0]} ({top.iloc[0]}/{len(chosen)} folds)"
    return Prediction("baseline", pred, split, detail=detail)


def cnn_meta(
    view, framework: str, method: str, measure: str, measures: Sequence[str], backbone: str,
    input_size: Sequence[int] | None, target: str, pretrained: bool, num_classes: int, agreement: bool = True,
    extra_features: Sequence[str] = (),
) -> QualityMeta:
    """The description of a CNN regressor for the data of ``view`` (first case of the batch); ``agreement`` adds the
    method's vote-fraction map as the last channel where the file has vote counts."""
    seg_ndim = len(view.dataset("segmentation").shape)
    dims = 3 if seg_ndim == 3 else 2
    img_c = 0
    if framework in IMAGE_FRAMEWORKS:
        ish = view.dataset("image").shape
        img_c = int(ish[0]) if len(ish) == seg_ndim + 1 else 1
    ms = list(measures) if measure == COMBINED else [measure]
    size = list(input_size) if input_size else ([128, 128] if dims == 2 else [64, 64, 64])
    if len(size) == 1:
        size = size * dims
    if len(size) != dims:
        raise ValueError(f"--input-size has {len(size)} values for {dims}-D cases")
    return QualityMeta(
        framework=framework,
        method=method,
        measure=measure,
        measures=ms,
        target=target,
        backbone=backbone if dims == 2 else "smallcnn3d",
        pretrained=pretrained,
        dims=dims,
        input_size=size,
        num_classes=int(num_classes),
        image_channels=img_c,
        channels=channel_names(
            framework, img_c, num_classes, ms, method if agreement and view.has(f"{method}/votes") else None
        ),
        dropout=0.2,
        extra_features=list(extra_features) if framework == "hybrid" else None,
        features=list(extra_features) if framework == "critic" else None,
    )


def load_raw(sf, case_ids: Sequence[str], meta: QualityMeta, progress=None) -> torch.Tensor:
    """Raw resampled inputs ``(N, C, *input_size)`` of the cases (raises ``CaseError`` for an unreadable case)."""
    xs = []
    for cid in case_ids:
        xs.append(raw_inputs(sf.case(cid), meta))
        if progress is not None:
            progress.advance(cid)
    return torch.stack(xs)


def predict_cnn_framework(
    batch: Batch,
    x_raw: torch.Tensor,
    meta: QualityMeta,
    folds: np.ndarray | None,
    cfg: FitConfig,
    device,
    log: Callable[[str], None] | None = None,
    progress=None,
    fold_ensemble: bool = False,
    pairs: LevelPairs | None = None,
    masks: torch.Tensor | None = None,
) -> Prediction:
    """CNN framework: cross-fitted out-of-fold predictions (when ``folds``) and a final model on all labelled.

    With ``folds`` every model reads the inputs with one set of label-free statistics of all labelled cases (those
    the final model would find on its own), and with ``fold_ensemble`` every other case gets the mean of the K fold
    models' and the final model's predictions (the fold models are kept in ``Prediction.state_dict`` under
    ``fold<k>.``); otherwise the final model's alone. ``progress`` (a :class:`uqseg_cli.progress.FitProgress`)
    hears every epoch and every finished fit. ``pairs`` (``case``: rows of ``x_raw``): vote-level pairs, each model
    training on those of its own training cases. ``masks`` ``(n_labelled, *size)``: the labelled cases' reference
    labels on the input grid, in case order (a mask regressor, ``meta.learn_mask``)."""
    y = batch.target
    lab, split = _splits(batch, folds)
    rest = np.flatnonzero(split != "oof")
    pred = np.full(len(batch.case_ids), np.nan)
    tag = f"{meta.method}/{meta.measure}/{meta.framework}"
    z_all = hybrid_features(batch, meta)

    def sub(idx):
        return None if z_all is None else z_all[idx]

    def predict(model, m, idx):
        return predict_cnn(model, standardize(x_raw[idx], m), cfg.batch_size, device, z=standardize_extra(sub(idx), m))

    members: list[torch.nn.Module] = []
    rest_sum = np.zeros(len(rest))
    records: list[dict] = []
    if folds is not None:
        mean, std = channel_stats(x_raw[lab])
        meta = dataclasses.replace(meta, channel_mean=mean, channel_std=std,
                                   **(extra_stats(sub(lab)) if z_all is not None else {}))

        def fp(train, test, f):
            c = FitConfig(**{**cfg.__dict__, "seed": fold_seed(cfg.seed, f, tag)})
            t0 = time.perf_counter()
            name = f"{tag} fold {f + 1}/{int(folds.max()) + 1}"
            hook = (lambda e, n: progress.epoch(name, e, n)) if progress is not None else None
            model, m = fit_cnn(x_raw[lab[train]], y[lab[train]], meta, c, device=device, z_raw=sub(lab[train]),
                               on_epoch=hook, pairs=None if pairs is None else pairs.subset(lab[train]),
                               masks=None if masks is None else masks[train])
            if progress is not None:
                progress.done(name, _fit_line(m, time.perf_counter() - t0))
            elif log:
                log(f"{tag}: fold {f + 1}/{int(folds.max()) + 1}: {_fit_line(m, time.perf_counter() - t0)}")
            out = predict(model, m, lab[test])
            if fold_ensemble:
                if len(rest):
                    rest_sum[:] += predict(model, m, rest)
                members.append(model.cpu())
                records.append(m.training)
            return out

        pred[lab] = cross_fit(folds, fp)
    c = FitConfig(**{**cfg.__dict__, "seed": fold_seed(cfg.seed, "final", tag)})
    t0 = time.perf_counter()
    hook = (lambda e, n: progress.epoch(f"{tag} final model", e, n)) if progress is not None else None
    model, m = fit_cnn(x_raw[lab], y[lab], meta, c, device=device, z_raw=sub(lab), on_epoch=hook,
                       pairs=None if pairs is None else pairs.subset(lab), masks=masks)
    if progress is not None:
        progress.done(f"{tag} final model", _fit_line(m, time.perf_counter() - t0))
    elif log:
        log(f"{tag}: final model: {_fit_line(m, time.perf_counter() - t0)}")
    if len(rest):
        pred[rest] = (rest_sum + predict(model, m, rest)) / (len(members) + 1)
    m = dataclasses.replace(m, train_cases=[batch.case_ids[i] for i in lab])
    detail, state = meta.backbone, None
    if members:
        m = dataclasses.replace(m, fold_models=len(members), training={**m.training, "folds": records})
        detail = f"{meta.backbone}, mean of {len(members)} fold models + the final model"
        state = prefixed_state(members, FOLD_PREFIX)
    return Prediction(meta.framework, pred, split, detail=detail, model_meta=m, model=model.cpu(), state_dict=state)


def load_masks(sf, case_ids: Sequence[str], size: Sequence[int]) -> torch.Tensor:
    """Reference label maps of the cases on the critic's grid ``(N, *size)`` int64 (nearest neighbour)."""
    return torch.stack([reference_grid(sf.case(cid).get("reference"), size) for cid in case_ids])


def predict_critic_framework(
    batch: Batch,
    x_raw: torch.Tensor,
    masks: torch.Tensor,
    meta: QualityMeta,
    folds: np.ndarray,
    cfg: FitConfig,
    device,
    progress=None,
    head: str = "blend",
    tta: int = 1,
) -> Prediction:
    """Critic framework (quality/critic.py): one critic per fold, fitted on the other folds' reference masks, gives
    its fold's labelled cases out-of-fold critic features; every other case gets the mean of the K critics'
    features (each critic's probabilities averaged over ``tta`` symmetries). The regressor (:func:`fit_critic_head`,
    ``head``) is then cross-fitted on the same folds (``oof``) and refitted on every labelled case (``test``).
    ``masks`` ``(n_labelled, *size)``."""
    y = batch.target
    lab, split = _splits(batch, folds)
    rest = np.flatnonzero(split != "oof")
    k_folds = int(folds.max()) + 1
    tag = f"{meta.method}/{meta.measure}/critic"
    mean, std = channel_stats(x_raw[lab])  # label-free input statistics, shared by every critic
    meta = dataclasses.replace(meta, channel_mean=mean, channel_std=std,
                               critic_tta=len(tta_transforms(meta.input_size)[: max(1, int(tta))]))
    zc = np.full((len(batch.case_ids), len(CRITIC_FEATURES)), np.nan)
    zc[rest] = 0.0
    critics, records = [], []
    for f in range(k_folds):
        c = FitConfig(**{**cfg.__dict__, "seed": fold_seed(cfg.seed, f, tag)})
        name = f"{tag} critic {f + 1}/{k_folds}"
        hook = (lambda e, n, name=name: progress.epoch(name, e, n)) if progress is not None else None
        t0 = time.perf_counter()
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        model, m = fit_critic(x_raw[lab[train]], masks[train], meta, c, device, on_epoch=hook)
        if progress is not None:
            progress.done(name, _fit_line(m, time.perf_counter() - t0))
        zc[lab[test]] = predict_critic_features(model, x_raw[lab[test]], m, cfg.batch_size, device)
        if len(rest):
            zc[rest] += predict_critic_features(model, x_raw[rest], m, cfg.batch_size, device) / k_folds
        critics.append(model.cpu())
        records.append(m.training)
    xa = method_matrix(batch.long, meta.method, meta.features, batch.case_ids)
    seed = cfg.seed
    pred = np.full(len(batch.case_ids), np.nan)
    pred[lab] = cross_fit(folds, lambda tr, te, f: predict_critic_head(
        fit_critic_head(xa[lab[tr]], zc[lab[tr]], y[lab[tr]], seed, head), xa[lab[te]], zc[lab[te]]))
    heads = fit_critic_head(xa[lab], zc[lab], y[lab], seed, head)
    if len(rest):
        pred[rest] = predict_critic_head(heads, xa[rest], zc[rest])
    m = dataclasses.replace(
        m, features=[*meta.features, *CRITIC_FEATURES], critics=k_folds, training={"critics": records},
        train_cases=[batch.case_ids[i] for i in lab],
    )
    return Prediction("critic", pred, split, detail=f"{k_folds} critics {critic_arch(meta)} + {HEAD_DETAIL[head]}",
                      model_meta=m, arrays=heads, state_dict=critics_state(critics))


def predict_critic_loaded(batch: Batch, x_raw: torch.Tensor, meta: QualityMeta, critics: Sequence[torch.nn.Module],
                          arrays: dict, batch_size: int, device) -> np.ndarray:
    """A saved critic model's predictions ``(n,)`` (its ``critics``, :func:`~.critic.load_critics`): the mean of
    their features, then its regressor."""
    zc = sum(predict_critic_features(c.to(device), x_raw, meta, batch_size, device) for c in critics) / len(critics)
    names = meta.features[: len(meta.features) - len(CRITIC_FEATURES)]
    return predict_critic_head(arrays, method_matrix(batch.long, meta.method, names, batch.case_ids), zc)


def hybrid_features(batch: Batch, meta: QualityMeta) -> np.ndarray | None:
    """The raw aggregated features ``(n_cases, P)`` a hybrid model joins to its embedding (None otherwise)."""
    names = meta.extra_features
    if not names:
        return None
    return method_matrix(batch.long, meta.method, names, batch.case_ids)


def _fit_line(meta: QualityMeta, seconds: float) -> str:
    t = meta.training
    val = f"validation MSE {t['best_val_mse']:.4f}" if "best_val_mse" in t else (
        f"validation loss {t['best_val_loss']:.4f}")
    return (
        f"fitted on {t['n_train']} (+{t['n_val']} validation) case(s), best epoch {t['best_epoch']}/{t['epochs_run']}"
        f", {val} ({seconds:.0f} s)"
    )


def score_rows(batch: Batch, method: str, measure: str, p: Prediction, target: str) -> pd.DataFrame:
    """Rows of scores.csv for one prediction (cases without a prediction are left out)."""
    t = batch.target
    keep = np.isfinite(p.predicted)
    df = pd.DataFrame(
        {
            "case": np.asarray(batch.case_ids)[keep],
            "method": method,
            "measure": measure,
            "framework": p.framework,
            f"predicted_{target}": p.predicted[keep],
            f"true_{target}": t[keep],
            "abs_error": np.abs(p.predicted[keep] - t[keep]),
            "split": p.split[keep],
            "train_case": batch.train_case[keep],
        }
    )
    return df


def summary_rows(
    scores: pd.DataFrame, target: str, details: dict, failure_threshold: float | None, include_train: bool
) -> pd.DataFrame:
    """One summary row per (method, measure, framework) over the honest rows: split oof or test, with a true
    target, and (unless ``include_train``) not seen by the segmenter."""
    rows = []
    for (method, measure, fw), g in scores.groupby(["method", "measure", "framework"], sort=False):
        ok = g["split"].isin(["oof", "test"]) & g[f"true_{target}"].notna()
        if not include_train:
            ok &= ~g["train_case"].astype(bool)
        h = g[ok]
        s = regression_summary(h[f"true_{target}"], h[f"predicted_{target}"], failure_threshold)
        if s["n"] == 0:
            s = {**s, "aurc": math.nan}
        rows.append({"method": method, "measure": measure, "framework": fw, **s,
                     "detail": details.get((method, measure, fw), "")})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["beats_baseline"] = beats_baseline(out)
    return out


def beats_baseline(summary: pd.DataFrame) -> pd.Series:
    """Per summary row: does the regressor's R² exceed the best single feature's of the same method and measure,
    and 0 (a regressor worse than predicting the mean beats nothing, however bad the baseline)?
    ``True``/``False`` for regressors, empty for the baseline itself and where either R² is undefined."""
    base = summary[summary["framework"] == "baseline"].set_index(["method", "measure"])["r2"]
    out = []
    for r in summary.itertuples():
        b = base.get((r.method, r.measure), math.nan) if r.framework != "baseline" else math.nan
        ok = math.isfinite(float(b)) and math.isfinite(float(r.r2))
        out.append(bool(r.r2 > max(b, 0.0)) if ok else "")
    return pd.Series(out, index=summary.index, dtype=object)


def make_folds(batch: Batch, cv: int, seed: int) -> np.ndarray | None:
    """Folds of the labelled cases (``None`` for ``cv < 2``)."""
    if cv < 2:
        return None
    return assign_folds(int(batch.labelled.sum()), cv, seed)


__all__ = [
    "CNN_MIN_LABELLED",
    "Batch",
    "beats_baseline",
    "ALL_METHODS",
    "COMBINED",
    "Prediction",
    "cnn_meta",
    "feature_names",
    "hybrid_features",
    "load_masks",
    "load_raw",
    "make_folds",
    "predict_baseline_cv",
    "predict_cnn_framework",
    "fit_critic_head",
    "predict_critic_framework",
    "predict_critic_head",
    "predict_critic_loaded",
    "predict_features",
    "predict_features_loaded",
    "score_rows",
    "summary_rows",
    "with_combined",
]
