"""The ``critic`` framework: a segmentation network learns each labelled case's *reference mask* from the image, the
segmentation being scored and its uncertainty; how far its answer lies from that segmentation predicts the Dice.

Why a critic and not one more regression CNN: a regression CNN learns from one number per labelled case (600 cases,
600 targets), a critic from every voxel of every reference mask — the supervision a segmenter needs — so it learns
where a segmentation of this kind tends to be wrong (an annotation style the segmenter missed, a lesion half
found) from the few hundred cases users have. The critic starts from the segmenter's own weights (encoder and
decoder, ``models.init_as_segmenter``): at the start it reproduces the segmenter on the image channels, and the
extra channels (segmentation, uncertainty) start at zero weight, so everything it learns is a correction.

With ``score --critic-tta N`` a critic's probabilities are averaged over the first N of the flips and quarter turns
of its input (:func:`tta_transforms`, at most the 8 symmetries of a square grid; ``meta.critic_tta``). Held out on
ISIC it raised R² by 0.004–0.008 with critics trained 16 epochs and not with 32 (docs/quality.md), at N times the
cost of applying a critic, so the default is one pass.

Per case the critic's probabilities ``p`` ``(K, *input_size)`` and the scored segmentation ``S`` (its ``seg:<k>``
input channels, thresholded at 0.5 after resampling) give :data:`CRITIC_FEATURES` (means over foreground classes):

- ``critic/dice``: Dice between the critic's argmax and ``S`` (both empty: 1);
- ``critic/soft_dice``: ``2 Σ p_k S_k / (Σ p_k + |S_k|)`` (both zero: 1);
- ``critic/log_volume_ratio``: ``log((Σ p_fg + 1) / (|S_fg| + 1))`` (voxels of the input grid);
- ``critic/entropy``: mean binary entropy (nats) of ``p_fg = 1 - p_0`` over the voxels the critic or ``S`` call
  foreground (0 when there are none).

They join the method's aggregated features in a regressor (``quality/critic_head.py``; by default the mean of
boosted trees and a ridge regression) fitted on out-of-fold critic features (``scoring.predict_critic_framework``),
so the critic's answer is calibrated to Dice; ``--critic-head mean`` averages boosted trees with trees on the
aggregated features alone, so a change of acquisition that shifts the critic moves the prediction half as far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from uqseg_cli.errors import UqsegError
from uqseg_cli.quality.inputs import channel_stats, seg_channels, standardize
from uqseg_cli.quality.meta import QualityMeta
from uqseg_cli.quality.models import init_as_segmenter, prefixed_state
from uqseg_cli.quality.training import FitConfig, augment_pair, split_validation, train_early_stopping

CRITIC_FEATURES = ("critic/dice", "critic/soft_dice", "critic/log_volume_ratio", "critic/entropy")
"""The per-case features a critic gives (see the module text), in column order."""


def missing_fpn(backbone: str) -> str | None:
    """Why there is no registered ``fpn-<backbone>`` (the 2D critic and mask regressor); None when there is one."""
    from uqseg_cli.models.registry import list_models

    names = [m.name for m in list_models()]
    if f"fpn-{backbone}" in names:
        return None
    known = ", ".join(n[len("fpn-"):] for n in names if n.startswith("fpn-"))
    return f"no segmentation model fpn-{backbone} (--backbone {known})"


def critic_arch(meta: QualityMeta) -> str:
    """The registered segmentation model a critic is: ``fpn-<backbone>`` in 2D, ``unet3d-small`` in 3D."""
    if int(meta.dims) == 3:
        return "unet3d-small"
    why = missing_fpn(str(meta.backbone))
    if why:
        raise UqsegError(f"--framework critic: {why}")
    return f"fpn-{meta.backbone}"


def create_critic(meta: QualityMeta) -> torch.nn.Module:
    """The critic described by ``meta``: ``len(meta.channels)`` input channels, ``meta.num_classes`` outputs, no
    dropout (it is used deterministically)."""
    from uqseg_cli.models.registry import create_model

    return create_model(critic_arch(meta), in_channels=len(meta.channels), num_classes=int(meta.num_classes),
                        dropout=0.0)


def reference_grid(reference: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """A reference label map resampled to the critic's grid (nearest neighbour): ``(*size)`` int64."""
    r = torch.as_tensor(np.asarray(reference), dtype=torch.float32)[None, None]
    return F.interpolate(r, size=tuple(int(s) for s in size), mode="nearest")[0, 0].long()


def critic_features(probs: torch.Tensor, seg: torch.Tensor) -> np.ndarray:
    """:data:`CRITIC_FEATURES` of a batch: ``probs`` ``(N, K, *S)`` critic probabilities, ``seg`` ``(N, K-1, *S)``
    binary masks of the scored segmentation's foreground classes. Returns ``(N, 4)`` float64."""
    p = probs.double()
    s = seg.double()
    k = p.shape[1]
    red = tuple(range(2, p.ndim))
    hard = F.one_hot(p.argmax(1), k).movedim(-1, 1)[:, 1:].double()
    pf = p[:, 1:]

    def dice(a, b):
        num, den = 2 * (a * b).sum(red), a.sum(red) + b.sum(red)
        return torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den)).mean(1)

    fg = 1.0 - p[:, 0]
    s_fg = s.sum(1).clamp(max=1.0)
    ratio = torch.log((fg.flatten(1).sum(1) + 1.0) / (s_fg.flatten(1).sum(1) + 1.0))
    q = fg.clamp(1e-12, 1 - 1e-12)
    ent = -(q * q.log() + (1 - q) * (1 - q).log())
    region = ((fg > 0.5) | (s_fg > 0)).double()
    area = region.flatten(1).sum(1)
    entropy = torch.where(area > 0, (ent * region).flatten(1).sum(1) / area.clamp_min(1.0), torch.zeros_like(area))
    return torch.stack([dice(hard, s), dice(pf, s), ratio, entropy], dim=1).numpy()


def tta_transforms(spatial: Sequence[int]) -> list[tuple[int, tuple[int, ...]]]:
    """The symmetries a critic's input is averaged over, as ``(quarter turns, flipped spatial axes)``, identity
    first: for a square 2D grid the 8 of the square (turns 0–3, each without and with a flip of the last axis),
    otherwise the ``2**d`` flips of the ``d`` spatial axes. Axes count from the first spatial one."""
    d = len(spatial)
    if d == 2 and spatial[0] == spatial[1]:
        return [(k, f) for k in range(4) for f in ((), (1,))]
    flips = [tuple(a for a in range(d) if (m >> a) & 1) for m in range(2**d)]
    return [(0, f) for f in flips]


def _apply(x: torch.Tensor, k: int, axes: tuple[int, ...], inverse: bool = False) -> torch.Tensor:
    """One :func:`tta_transforms` symmetry (or its inverse) on ``(N, C, *spatial)``: turn, then flip."""
    dims = tuple(2 + a for a in axes)
    if inverse:
        x = torch.flip(x, dims) if dims else x
        return torch.rot90(x, -k, (2, 3)) if k else x
    x = torch.rot90(x, k, (2, 3)) if k else x
    return torch.flip(x, dims) if dims else x


@torch.no_grad()
def critic_probs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 16, device="cpu",
                 tta: int = 1) -> torch.Tensor:
    """Softmax probabilities ``(N, K, *S)`` float32 (CPU) of a critic for standardised inputs ``x``, averaged over
    the first ``tta`` of :func:`tta_transforms` (each mapped back to the input's orientation)."""
    model.eval()
    sym = tta_transforms(x.shape[2:])[: max(1, int(tta))]
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        p = sum(_apply(torch.softmax(model(_apply(xb, k, a)).float(), 1), k, a, inverse=True) for k, a in sym)
        out.append((p / len(sym)).cpu())
    return torch.cat(out)


def predict_critic_features(model, x_raw: torch.Tensor, meta: QualityMeta, batch_size: int = 16,
                            device="cpu") -> np.ndarray:
    """:data:`CRITIC_FEATURES` ``(N, 4)`` of raw inputs ``(N, C, *input_size)`` under one fitted critic (averaged
    over ``meta.critic_tta`` symmetries)."""
    out = []
    idx = seg_channels(meta)
    for i in range(0, x_raw.shape[0], batch_size):
        xb = x_raw[i : i + batch_size]
        p = critic_probs(model, standardize(xb, meta), batch_size, device, tta=int(meta.critic_tta or 1))
        out.append(critic_features(p, (xb[:, idx] >= 0.5).to(torch.float32)))
    return np.concatenate(out) if out else np.zeros((0, len(CRITIC_FEATURES)))


def fit_critic(
    x_raw: torch.Tensor,
    masks: torch.Tensor,
    meta: QualityMeta,
    cfg: FitConfig = FitConfig(),
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[torch.nn.Module, QualityMeta]:
    """Fit a critic on raw inputs ``(N, C, *input_size)`` and reference labels ``masks`` ``(N, *input_size)`` int64
    (loss: cross-entropy + soft Dice; AdamW, cosine schedule; early stopping on the validation part's loss, the best
    epoch kept). Returns the model (eval mode) and ``meta`` with the channel statistics (those of ``x_raw`` unless
    ``meta`` has them), the number of tensors
    started from the segmenter and the training record. Deterministic for a given ``cfg.seed`` on the CPU."""
    from uqseg_cli.training.loop import dice_ce_loss

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if meta.channel_mean is None:  # statistics given (e.g. shared by the critics of every fold) are kept
        mean, std = channel_stats(x_raw)
        meta = dataclasses.replace(meta, channel_mean=mean, channel_std=std)
    x = standardize(x_raw, meta)
    tr, va = split_validation(x.shape[0], cfg.val_fraction, cfg.seed)
    model = create_critic(meta)
    if cfg.init_state is not None:
        meta = dataclasses.replace(
            meta, init_tensors_from_segmenter=init_as_segmenter(model, cfg.init_state, int(meta.image_channels or 0))
        )
    model = model.to(device)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        xb, yb = augment_pair(x[idx], masks[idx], gen) if cfg.augment else (x[idx], masks[idx])
        return dice_ce_loss(model(xb.to(device)).float(), yb.to(device))

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        tot = 0.0
        for i in range(0, len(va), cfg.batch_size):
            b = va[i : i + cfg.batch_size]
            tot += float(dice_ce_loss(model(x[b].to(device)).float(), masks[b].to(device))) * len(b)
        return tot / len(va)

    best, best_epoch, epochs_run = train_early_stopping(model, tr, va, cfg, gen, batch_loss, val_loss,
                                                        on_epoch=on_epoch)
    training = {
        "epochs_run": epochs_run, "best_epoch": best_epoch, "best_val_loss": best, "n_train": int(len(tr)),
        "n_val": int(len(va)), "lr": cfg.lr, "batch_size": cfg.batch_size, "augment": cfg.augment,
        "seed": cfg.seed, "loss": "dice+ce",
    }
    return model, dataclasses.replace(meta, training=training)


def critics_state(models: Sequence[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The weights of several critics in one state dict, critic ``k``'s under ``critic<k>.``."""
    return prefixed_state(models, "critic")


def load_critics(meta: QualityMeta, state: dict[str, torch.Tensor]) -> list[torch.nn.Module]:
    """The ``meta.critics`` critics of a checkpoint's state dict (eval mode, CPU); ``RuntimeError`` when the
    weights do not match ``meta``."""
    out = []
    for k in range(int(meta.critics or 0)):
        prefix = f"critic{k}."
        model = create_critic(meta)
        model.load_state_dict({n[len(prefix):]: t for n, t in state.items() if n.startswith(prefix)})
        out.append(model.eval())
    return out
