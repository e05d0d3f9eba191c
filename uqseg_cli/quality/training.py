"""Fitting and applying the CNN quality regressors (early stopping on a validation part).

Losses (``FitConfig.loss``): ``mse``; ``huber`` (smooth L1 with β = 0.1: the tail of failed cases does not
dominate); ``mse+pearson`` (MSE plus 0.1 × (1 − Pearson r of the batch): rewards the ranking as well as the level).
Optionally the 2D backbone starts from the segmenter's trained encoder (``FitConfig.init_state``).

The training inputs are the raw resampled channels ``(N, C, *input_size)`` of :func:`~.inputs.raw_inputs`; the
per-channel statistics are computed on the cases being fitted and stored in the returned ``meta``, so prediction
(:func:`~.inputs.build_inputs`) standardises new cases exactly as the training cases were.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.quality.inputs import channel_stats, seg_channels, standardize
from uqseg_cli.quality.level_pairs import LevelPairs
from uqseg_cli.quality.mask_regressor import MaskRegressor
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import QualityRegressor, create_quality_model, init_as_segmenter, init_from_segmenter

LOSSES = ("mse", "huber", "mse+pearson")
MASK_WEIGHT = 1.0
"""Weight of a mask regressor's segmentation loss (Dice + cross-entropy, about 0.3–1) beside its regression loss
(MSE, about 0.01–0.05): the dense reference supervises the encoder and decoder, and the head learns the Dice from
the regression loss alone."""


@dataclass(frozen=True)
class FitConfig:
    """Training options. ``val_fraction`` of the fitted cases (at least 2, when at least 6 cases are fitted) is
    held out for early stopping with ``patience`` epochs; the weights of the best validation epoch are kept."""

    epochs: int = 40
    patience: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    augment: bool = True
    seed: int = 0
    pretrained: bool = False
    loss: str = "mse"
    init_state: dict | None = None  # a segmenter's state dict: start the backbone from its encoder


def regression_loss(pred: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss of ``pred`` and ``y`` ``(N,)`` (see the module text)."""
    if kind == "mse":
        return F.mse_loss(pred, y)
    if kind == "huber":
        return F.smooth_l1_loss(pred, y, beta=0.1)
    if kind == "mse+pearson":
        pc, yc = pred - pred.mean(), y - y.mean()
        r = (pc * yc).sum() / (pc.norm() * yc.norm() + 1e-8)
        return F.mse_loss(pred, y) + 0.1 * (1.0 - r)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips along every spatial axis and, for square 2D inputs, a random multiple of 90° rotation.

    The same transform is applied to every channel of a sample (image, segmentation and uncertainty stay aligned);
    each sample of the batch ``(N, C, *spatial)`` draws its own transform.
    """
    out = []
    spatial = list(range(1, x.ndim - 1))  # axes of one sample (C, *spatial) without the channel axis
    for i in range(x.shape[0]):
        s = x[i]
        flips = torch.rand(len(spatial), generator=generator) < 0.5
        axes = [a for a, f in zip(spatial, flips.tolist(), strict=True) if f]
        if axes:
            s = torch.flip(s, axes)
        if x.ndim == 4 and x.shape[2] == x.shape[3]:
            k = int(torch.randint(0, 4, (1,), generator=generator))
            if k:
                s = torch.rot90(s, k, dims=(1, 2))
        out.append(s)
    return torch.stack(out)


def augment_pair(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flips/quarter turns (:func:`augment_batch`) on inputs ``(N, C, *S)`` and labels
    ``(N, *S)``."""
    both = augment_batch(torch.cat([x, y[:, None].to(x.dtype)], dim=1), gen)
    return both[:, :-1], both[:, -1].round().long()


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of ``n`` fitted cases; no validation part below 6 cases or for fraction 0."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = 0 if (n < 6 or fraction <= 0) else max(2, int(round(n * fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def extra_stats(z: np.ndarray) -> dict[str, list[float]]:
    """Median (imputation), mean and std (a zero std becomes 1) of a hybrid model's features ``(N, P)``."""
    import warnings

    z = np.asarray(z, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(z, axis=0)
    med = np.where(np.isfinite(med), med, 0.0)
    zi = np.where(np.isfinite(z), z, med)
    std = zi.std(axis=0)
    return {"extra_median": med.tolist(), "extra_mean": zi.mean(axis=0).tolist(),
            "extra_std": np.where(std > 0, std, 1.0).tolist()}


def standardize_extra(z: np.ndarray | None, meta: QualityMeta) -> torch.Tensor | None:
    """A hybrid model's features ``(N, P)`` imputed and standardised with the stored statistics (None stays)."""
    if z is None or not meta.extra_features:
        return None
    z = np.asarray(z, dtype=np.float64)
    zi = np.where(np.isfinite(z), z, np.asarray(meta.extra_median))
    return torch.as_tensor((zi - np.asarray(meta.extra_mean)) / np.asarray(meta.extra_std), dtype=torch.float32)


@torch.no_grad()
def predict_cnn(
    model: QualityRegressor, x: torch.Tensor, batch_size: int = 32, device="cpu", z: torch.Tensor | None = None
) -> np.ndarray:
    """Predicted quality ``(N,)`` float64 for standardised inputs ``x`` ``(N, C, *input_size)`` (and standardised
    features ``z`` ``(N, P)`` of a hybrid model)."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        zb = z[i : i + batch_size].to(device) if z is not None else None
        out.append(model(x[i : i + batch_size].to(device), zb).float().cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def train_early_stopping(
    model: torch.nn.Module,
    tr: np.ndarray,
    va: np.ndarray,
    cfg: FitConfig,
    gen: torch.Generator,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    validate: Callable[[], float],
    log_epoch: Callable[[int, float, float], None] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    epoch_extra: Callable[[], np.ndarray] | None = None,
) -> tuple[float, int, int]:
    """The training loop of the quality CNNs and critics: AdamW (``cfg.lr``, ``cfg.weight_decay``), cosine
    schedule over ``cfg.epochs``, batches of ``cfg.batch_size`` training indices ``tr`` in a ``gen`` order
    (``batch_loss(idx)`` gives a batch's loss; a batch of one is skipped, BatchNorm cannot train on it), and after
    each epoch ``validate()`` (lower is better; the epoch's mean training loss when ``va`` is empty);
    ``epoch_extra()``, when given, adds its indices to the epoch's training indices (drawn anew each epoch). Stops
    ``cfg.patience`` epochs after the best one and leaves the model at its best epoch, in eval mode.

    Returns ``(best value, best epoch (1-based), epochs run)``."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    best = (math.inf, -1, copy.deepcopy(model.state_dict()))
    epochs_run = 0
    for epoch in range(cfg.epochs):
        model.train()
        ids = tr if epoch_extra is None else np.concatenate([tr, epoch_extra()])
        perm = ids[torch.randperm(len(ids), generator=gen).numpy()]
        total, count = 0.0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2 and len(perm) > 1:  # BatchNorm cannot train on a batch of one
                continue
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        train = total / max(count, 1)
        val = validate() if len(va) else train
        epochs_run += 1
        if log_epoch:
            log_epoch(epoch, train, val)
        if on_epoch:  # progress hook: (epochs done, most epochs)
            on_epoch(epoch + 1, cfg.epochs)
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    model.load_state_dict(best[2])
    model.eval()
    return best[0], best[1] + 1, epochs_run


def fit_cnn(
    x_raw: torch.Tensor,
    y: np.ndarray,
    meta: QualityMeta,
    cfg: FitConfig = FitConfig(),
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
    z_raw: np.ndarray | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    pairs: LevelPairs | None = None,
    masks: torch.Tensor | None = None,
) -> tuple[QualityRegressor | MaskRegressor, QualityMeta]:
    """Fit a regressor on raw inputs ``x_raw`` ``(N, C, *input_size)`` and targets ``y`` ``(N,)`` in [0, 1].

    ``meta`` describes the model (``backbone``, ``channels``, ``dims``, ``input_size`` ...); the returned copy adds
    ``channel_mean``/``channel_std`` (and a hybrid model's ``extra_*`` statistics) of ``x_raw`` unless ``meta``
    already has them (the members of a fold ensemble share one set), ``init_tensors_from_segmenter``
    when ``cfg.init_state`` is given, and the training record (epochs, best epoch, validation MSE). Deterministic
    for a given ``cfg.seed`` on CPU.

    ``pairs`` (:mod:`~uqseg_cli.quality.level_pairs`, ``case`` indexing the rows of ``x_raw``): every epoch each
    training case with pairs adds one of them, drawn at random, to the epoch; validation sees the cases alone.

    ``meta.learn_mask`` (:mod:`~uqseg_cli.quality.mask_regressor`) needs ``masks`` ``(N, *input_size)`` int64, the
    reference labels on the input grid: the loss adds :data:`MASK_WEIGHT` × (Dice + cross-entropy) of the mask on
    the training cases (a pair keeps its case's reference); early stopping still reads the validation MSE of the
    quality alone, and the network starts as the segmenter (``cfg.init_state``, ``models.init_as_segmenter``).
    """
    from uqseg_cli.training.loop import dice_ce_loss

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if meta.channel_mean is None:
        mean, std = channel_stats(x_raw)
        meta = dataclasses.replace(meta, channel_mean=mean, channel_std=std)
    x = standardize(x_raw, meta)
    if meta.extra_features:
        if z_raw is None:
            raise ValueError("a hybrid model needs its aggregated features (z_raw)")
        if meta.extra_mean is None:
            meta = dataclasses.replace(meta, **extra_stats(z_raw))
    z = standardize_extra(z_raw, meta)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float32))
    tr, va = split_validation(x.shape[0], cfg.val_fraction, cfg.seed)
    if meta.learn_mask and masks is None:
        raise ValueError("a mask regressor needs the reference masks (masks)")
    model = create_quality_model(meta, pretrained=cfg.pretrained)
    if cfg.init_state is not None:
        img = int(meta.image_channels or 0)
        n = init_as_segmenter(model.net, cfg.init_state, img) if meta.learn_mask else init_from_segmenter(
            model, cfg.init_state, img)
        meta = dataclasses.replace(meta, init_tensors_from_segmenter=n)
    model = model.to(device)
    model.init_output(float(yt[tr].mean()))
    rows, y_all, draw, n_pairs = x.__getitem__, yt, None, 0
    case_of: Callable[[np.ndarray], np.ndarray] = np.asarray  # a training row -> its case's row
    if pairs is not None and len(pairs):
        if z is not None:
            raise ValueError("vote-level pairs replace the segmentation, which a hybrid model's features describe")
        rows, y_all, draw, n_pairs, case_of = _with_pairs(x, yt, pairs, tr, meta, gen)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        zb = z[idx].to(device) if z is not None else None
        if not meta.learn_mask:
            xb = augment_batch(rows(idx), gen) if cfg.augment else rows(idx)
            return regression_loss(model(xb.to(device), zb), y_all[idx].to(device), cfg.loss)
        mb = masks[case_of(idx)]
        xb, mb = augment_pair(rows(idx), mb, gen) if cfg.augment else (rows(idx), mb)
        pred, logits = model.outputs(xb.to(device), zb)
        return regression_loss(pred, y_all[idx].to(device), cfg.loss) + MASK_WEIGHT * dice_ce_loss(
            logits.float(), mb.to(device))

    def val_mse() -> float:
        zv = z[va] if z is not None else None
        return float(np.mean((predict_cnn(model, x[va], device=device, z=zv) - yt[va].numpy()) ** 2))

    def log_epoch(epoch: int, train: float, val: float) -> None:
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs}: train MSE {train:.5f}, validation MSE {val:.5f}")

    best, best_epoch, epochs_run = train_early_stopping(model, tr, va, cfg, gen, batch_loss, val_mse, log_epoch,
                                                        on_epoch, epoch_extra=draw)
    training = {
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "best_val_mse": best,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "augment": cfg.augment,
        "seed": cfg.seed,
        "loss": f"{cfg.loss}+mask" if meta.learn_mask else cfg.loss,
    }
    if n_pairs:
        training["vote_level_pairs"] = n_pairs
    return model, dataclasses.replace(meta, training=training)


def _with_pairs(
    x: torch.Tensor, y: torch.Tensor, pairs: LevelPairs, tr: np.ndarray, meta: QualityMeta, gen: torch.Generator
) -> tuple[Callable[[np.ndarray], torch.Tensor], torch.Tensor, Callable[[], np.ndarray], int,
           Callable[[np.ndarray], np.ndarray]]:
    """Index space of the cases ``0..N-1`` and their pairs ``N..N+M-1``: ``(rows(idx) -> standardised inputs,
    targets (N+M,), draw() -> one pair per training case with pairs, pairs of training cases, case_of(idx) -> the
    row of each index's case)``."""
    n = x.shape[0]
    seg_idx = torch.tensor(seg_channels(meta))
    mean = torch.tensor(meta.channel_mean, dtype=x.dtype)[seg_idx].reshape(1, -1, *[1] * (x.ndim - 2))
    std = torch.tensor(meta.channel_std, dtype=x.dtype)[seg_idx].reshape(1, -1, *[1] * (x.ndim - 2))
    seg = (pairs.seg.to(x.dtype) - mean) / std
    y_all = torch.cat([y, torch.as_tensor(pairs.target, dtype=y.dtype)])
    keep = np.isin(pairs.case, tr)
    groups = [n + np.flatnonzero(keep & (pairs.case == c)) for c in np.unique(pairs.case[keep])]

    def case_of(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        return np.where(idx >= n, pairs.case[np.clip(idx - n, 0, None)], idx)

    def rows(idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx)
        extra = np.flatnonzero(idx >= n)
        if not len(extra):
            return x[idx]
        xb = x[case_of(idx)].clone()
        xb[torch.as_tensor(extra)[:, None], seg_idx[None, :]] = seg[idx[extra] - n]
        return xb

    def draw() -> np.ndarray:
        u = torch.rand(len(groups), generator=gen).numpy()
        return np.array([g[int(f * len(g))] for g, f in zip(groups, u, strict=True)], dtype=np.int64)

    return rows, y_all, draw, int(keep.sum()), case_of
