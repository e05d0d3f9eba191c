"""CNN quality regressors: a timm 2D backbone or a small 3D CNN, global pooling, one sigmoid output (the Dice).

``QualityRegressor(x)`` maps ``(N, C, H, W)`` (or ``(N, C, D, H, W)``) to ``(N,)`` predicted quality in [0, 1];
``embed(x)`` is the penultimate embedding ``(N, F)`` (globally pooled backbone features, for UMAP);
``gradcam_layer`` names the last convolutional stage for Grad-CAM (``uqseg explain``).

Volumes are handled by a small 3D CNN on a fixed grid (default 64³) rather than 2.5D slices: the target (Dice) is a
property of the whole volume, there is no per-slice target to train a slice model on, and a 64³ 3D CNN is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from uqseg_cli.quality.inputs import seg_channels
from uqseg_cli.quality.mask_regressor import MaskRegressor
from uqseg_cli.quality.meta import QualityMeta


class SmallCNN3d(nn.Module):
    """Four conv-BN-ReLU blocks (widths 16, 32, 64, 128; max-pool by 2 after the first three), global average pool.

    Input ``(N, C, D, H, W)`` with every spatial size >= 8; output ``(N, 128)``.
    """

    def __init__(self, in_chans: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        blocks = []
        c = in_chans
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [
                nn.Conv3d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm3d(w),
                nn.ReLU(inplace=True),
                nn.Conv3d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm3d(w),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool3d(2))
            blocks.append(nn.Sequential(*layers))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x)).flatten(1)


class QualityRegressor(nn.Module):
    """Backbone → pooled features ``(N, F)`` → dropout → linear → sigmoid → ``(N,)``.

    ``dims``: 2 (timm backbone ``backbone``, created with ``in_chans`` and ``num_classes=0``) or 3
    (:class:`SmallCNN3d`, ``backbone`` is then ignored).
    """

    def __init__(
        self, backbone: str, in_chans: int, dims: int = 2, pretrained: bool = False, dropout: float = 0.2,
        n_extra: int = 0,
    ):
        super().__init__()
        self.dims = dims
        self.n_extra = int(n_extra)
        if dims == 2:
            import timm

            self.backbone = timm.create_model(backbone, pretrained=pretrained, in_chans=in_chans, num_classes=0)
            info = getattr(self.backbone, "feature_info", None)
            last = info[-1]["module"] if info else None
            self.gradcam_layer = f"backbone.{last}" if last else None
        elif dims == 3:
            self.backbone = SmallCNN3d(in_chans)
            self.gradcam_layer = f"backbone.blocks.{len(self.backbone.blocks) - 1}"
        else:
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.num_features = int(self.backbone.num_features)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features + self.n_extra, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding ``(N, F)``: globally pooled backbone features."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``(N,)`` quality; ``z`` ``(N, n_extra)``: the standardised aggregated features of a hybrid model (None:
        their training mean, 0 — e.g. for Grad-CAM, which explains the image part)."""
        e = self.dropout(self.embed(x))
        if self.n_extra:
            if z is None:
                z = torch.zeros((e.shape[0], self.n_extra), dtype=e.dtype, device=e.device)
            e = torch.cat([e, z.to(e.dtype)], dim=1)
        return torch.sigmoid(self.head(e)).squeeze(1)

    def init_output(self, mean_target: float) -> None:
        """Start from the mean training target: head bias = logit(mean), weights scaled down."""
        m = min(max(float(mean_target), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.head.bias.fill_(math.log(m / (1 - m)))
            self.head.weight.mul_(0.1)


def create_quality_model(meta: QualityMeta, pretrained: bool = False) -> QualityRegressor | MaskRegressor:
    """The regressor described by a checkpoint's ``meta`` (``backbone``, ``channels``, ``dims``, ``dropout``,
    ``extra_features``; with ``learn_mask`` a :class:`MaskRegressor` on ``fpn-<backbone>``, which needs the
    ``channel_mean``/``channel_std`` of its segmentation channels).

    ``pretrained`` downloads timm's ImageNet weights (for fitting with ``--pretrained``; a mask regressor's encoder,
    before the segmenter's weights replace them); loading a checkpoint never needs them.
    """
    if meta.learn_mask:
        idx = seg_channels(meta)
        return MaskRegressor(
            f"fpn-{meta.backbone}", len(meta.channels), int(meta.num_classes), idx,
            [meta.channel_mean[i] for i in idx], [meta.channel_std[i] for i in idx],
            dropout=float(0.2 if meta.dropout is None else meta.dropout), n_extra=len(meta.extra_features or []),
            pretrained=pretrained,
        )
    return QualityRegressor(
        meta.backbone,
        in_chans=len(meta.channels),
        dims=int(meta.dims),
        pretrained=pretrained,
        dropout=float(0.2 if meta.dropout is None else meta.dropout),
        n_extra=len(meta.extra_features or []),
    )


FOLD_PREFIX = "fold"
"""A fold ensemble's fold model ``k`` keeps its weights under ``fold<k>.`` beside the final model's own keys."""


def prefixed_state(models: Sequence[nn.Module], prefix: str) -> dict[str, torch.Tensor]:
    """The weights of several networks in one state dict, network ``k``'s under ``<prefix><k>.`` (a fold ensemble's
    fold models: :data:`FOLD_PREFIX`; a critic model's critics: ``critic``)."""
    return {f"{prefix}{k}.{n}": t for k, m in enumerate(models) for n, t in m.state_dict().items()}


def split_fold_state(state: dict[str, torch.Tensor]) -> tuple[dict, list[dict]]:
    """``(final model's weights, [fold model k's weights in order of k])`` of a checkpoint's state dict."""
    folds: dict[int, dict] = {}
    final = {}
    for name, t in state.items():
        head, _, rest = name.partition(".")
        k = head[len(FOLD_PREFIX):]
        if head.startswith(FOLD_PREFIX) and k.isdigit():
            folds.setdefault(int(k), {})[rest] = t
        else:
            final[name] = t
    return final, [folds[k] for k in sorted(folds)]


def load_quality_models(meta: QualityMeta, state: dict[str, torch.Tensor], final_only: bool = False
                        ) -> list[QualityRegressor | MaskRegressor]:
    """The final model and then the ``meta.fold_models`` fold models of a checkpoint's state dict (eval mode, CPU;
    ``final_only``: the final model alone); ``RuntimeError`` when the weights do not match ``meta``."""
    final, folds = split_fold_state(state)
    if len(folds) != int(meta.fold_models or 0):
        raise RuntimeError(f"{len(folds)} fold model(s) stored, the meta says {int(meta.fold_models or 0)}")
    out = []
    for weights in [final] if final_only else [final, *folds]:
        model = create_quality_model(meta)
        model.load_state_dict(weights)
        out.append(model.eval())
    return out


def load_matching(
    module: nn.Module, src: dict, widen: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> int:
    """Copy into ``module`` every tensor of ``src`` whose name and shape match its own; a convolution weight that
    differs only in its input channels (same outputs and kernel) becomes ``widen(src_weight, own_weight)``.

    Returns the number of tensors copied (0: nothing matched, the module is unchanged)."""
    own = module.state_dict()
    new = {}
    for name, t in own.items():
        s = src.get(name)
        if s is None:
            continue
        if tuple(s.shape) == tuple(t.shape):
            new[name] = s.to(t.dtype)
        elif s.ndim == t.ndim >= 4 and s.shape[0] == t.shape[0] and s.shape[2:] == t.shape[2:]:
            new[name] = widen(s, t)
    if new:
        module.load_state_dict({**own, **new})
    return len(new)


def widen_with_mean(image_channels: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A :func:`load_matching` ``widen``: the segmenter's first-convolution filters on the image channels and, on
    every other channel, their mean over the segmenter's input channels, scaled so the summed response keeps its
    size."""

    def widen(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (out, C_seg, k, k) -> (out, C, k, k)
        w = torch.empty_like(t)
        cs, c = int(s.shape[1]), int(t.shape[1])
        mean = s.mean(dim=1)
        for i in range(c):
            w[:, i] = s[:, i] if (i < image_channels and i < cs) else mean
        return w * (cs / c)

    return widen


def init_from_segmenter(model: QualityRegressor, seg_state: dict, image_channels: int) -> int:
    """Start a 2D regressor's backbone from a segmenter's trained encoder (``backbone.*`` weights of an FPN/U-Net
    on the same timm backbone): every tensor whose name and shape match is copied; the first convolution is widened
    by :func:`widen_with_mean`.

    Returns the number of tensors copied (0: nothing matched, the model is unchanged).
    """
    if model.dims != 2:
        return 0
    src = {k[len("backbone."):]: v for k, v in seg_state.items() if k.startswith("backbone.")}
    return load_matching(model.backbone, src, widen_with_mean(image_channels))


def init_as_segmenter(model: nn.Module, seg_state: dict, image_channels: int) -> int:
    """Start a segmentation network with extra input channels (a critic, a mask regressor's ``net``) from a
    segmenter's weights: every tensor whose name and shape match is copied; a first convolution with more input
    channels gets the segmenter's filters on the image channels and zeros on the others (segmentation,
    uncertainty), so the network starts as the segmenter. Without image channels (a seg-unc mask regressor) zeros
    would leave the first convolution dead: every channel then gets :func:`widen_with_mean`'s mean filter.
    Returns the number of tensors copied."""

    def widen(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = torch.zeros_like(t)
        n = min(int(s.shape[1]), int(image_channels), int(t.shape[1]))
        w[:, :n] = s[:, :n].to(t.dtype)
        return w

    return load_matching(model, seg_state, widen if image_channels > 0 else widen_with_mean(0))
