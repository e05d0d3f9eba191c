"""The `SegModel` contract shared by every segmentation network (docs/architecture.md, "Models").

A model is split where its first dropout layer sits: ``encode(x)`` runs everything deterministic before it and
returns a list of feature tensors; ``decode(features)`` runs the rest (dropout included) and returns logits at the
input resolution. MC dropout (``bayes/mc_dropout.py``) can therefore run ``encode`` once and ``decode`` T times on
``repeat_features(features, T)``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from uqseg_cli.errors import InputError

Features = list[torch.Tensor]

#: where the dropout layers go: ``head`` = one spatial dropout before the segmentation head (MC dropout re-runs
#: only the head); ``decoder`` = spatial dropout in every decoder block and before the head (MC dropout re-runs
#: the whole decoder).
DROPOUT_PLACES = ("head", "decoder")


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """Dropout modules (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``) with ``p > 0`` inside ``module``
    (timm blocks carry ``p = 0`` dropouts that do nothing; they are not counted)."""
    kinds = (nn.modules.dropout._DropoutNd,)
    return [m for m in module.modules() if isinstance(m, kinds) and m.p > 0]


def spatial_dropout(dims: int, p: float) -> nn.Module:
    """Channel-wise ("spatial") dropout for 2D or 3D feature maps; identity when ``p == 0``."""
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if dims == 2 else nn.Dropout3d(p)


def check_dropout_args(dropout: float, dropout_at: str) -> None:
    """Validate the dropout rate (0 <= p < 1) and placement (one of `DROPOUT_PLACES`)."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if dropout_at not in DROPOUT_PLACES:
        raise ValueError(f"dropout_at must be one of {', '.join(DROPOUT_PLACES)}, got {dropout_at!r}")


class SegModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: a segmentation network with an encoder/decoder split.

    Subclasses set ``dims`` (2 or 3), ``size_multiple`` (each spatial input side must be a multiple of it),
    optionally ``fixed_input_size`` (the only accepted spatial size, e.g. Swin), and implement ``encode`` and
    ``decode`` and ``encoder_parts`` (the modules ``encode`` runs).
    """

    dims: int = 2
    size_multiple: int = 32
    fixed_input_size: tuple[int, ...] | None = None

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        #: registry name and constructor arguments, set by `create_model` (stored in checkpoints)
        self.arch: str = ""
        self.init_args: dict = {}

    # -- the split -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> Features:
        """``x`` (N, C, *spatial) float → list of feature tensors, each with batch dimension N first."""

    @abc.abstractmethod
    def decode(self, features: Features) -> torch.Tensor:
        """Features from `encode` (batch N, or T*N after `repeat_features`) → logits (N, K, *spatial)."""

    @abc.abstractmethod
    def encoder_parts(self) -> Sequence[nn.Module]:
        """The submodules that `encode` runs (used to check where dropout sits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, *spatial) for input (N, C, *spatial); equals ``decode(encode(x))``."""
        self.check_input(tuple(x.shape))
        return self.decode(self.encode(x))

    @staticmethod
    def repeat_features(features: Features, T: int) -> Features:
        """Each feature tensor repeated T times along the batch, sample-major: row ``t * N + n`` is sample t of
        input n, so ``decode(...)`` logits reshape to (T, N, K, *spatial) with ``.view(T, N, ...)``."""
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        return [f.repeat(T, *([1] * (f.dim() - 1))) for f in features]

    @property
    def dropout_after_encoder(self) -> bool:
        """True when no dropout module is part of the encoder, so MC dropout may run `encode` once."""
        return not any(dropout_modules(part) for part in self.encoder_parts())

    def dropout_modules(self) -> list[nn.Module]:
        """The dropout modules MC dropout switches to train mode."""
        return dropout_modules(self)

    # -- input sizes -----------------------------------------------------------------------------------------
    @property
    def input_rule(self) -> str:
        """Human-readable rule for accepted spatial input sizes."""
        if self.fixed_input_size is not None:
            return "exactly " + "x".join(str(s) for s in self.fixed_input_size)
        return f"each side a multiple of {self.size_multiple}"

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """The smallest accepted spatial size >= ``size`` on every axis (or the fixed size)."""
        if self.fixed_input_size is not None:
            return tuple(self.fixed_input_size)
        m = self.size_multiple
        return tuple(max(m, -(-int(s) // m) * m) for s in size)

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise `InputError` unless ``shape`` is (N, in_channels, *spatial) with an accepted spatial size."""
        shape = tuple(int(s) for s in shape)
        name = self.arch or type(self).__name__
        if len(shape) != self.dims + 2:
            raise InputError(
                f"model {name}: expected a {self.dims + 2}-d input (N, C, {'D, ' if self.dims == 3 else ''}H, W), "
                f"got shape {shape}"
            )
        if shape[1] != self.in_channels:
            raise InputError(f"model {name}: expected {self.in_channels} input channel(s), got {shape[1]}")
        spatial = shape[2:]
        got = "x".join(map(str, spatial))
        if self.fixed_input_size is not None:
            if spatial != tuple(self.fixed_input_size):
                raise InputError(f"model {name}: input size must be {self.input_rule}, got {got}")
        elif any(s % self.size_multiple or s == 0 for s in spatial):
            raise InputError(f"model {name}: input size must have {self.input_rule}, got {got}")

    def num_parameters(self) -> int:
        """Number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())


class EncoderDecoderHead(SegModel):
    """Encoder → decoder → head networks (U-Net, FPN, Swin-UNet) with dropout before the head or in the decoder.

    Subclasses provide ``_encoder(x) -> features``, ``_decoder(features) -> tensor``, the modules ``decoder`` and
    ``head``, ``dropout_at`` (``"head"`` or ``"decoder"``) and ``encoder_attr`` (the name of the encoder module).
    With dropout before the head, `encode` runs the decoder too, so MC dropout re-runs only the head.
    """

    encoder_attr: str = "backbone"
    dropout_at: str = "head"

    def encode(self, x: torch.Tensor) -> Features:
        feats = self._encoder(x)
        return [self._decoder(feats)] if self.dropout_at == "head" else feats

    def decode(self, features: Features) -> torch.Tensor:
        x = features[0] if self.dropout_at == "head" else self._decoder(features)
        return self.head(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[Features, torch.Tensor]:
        """``(encoder maps (finest first), logits (N, K, *spatial))`` of one deterministic pass (no MC re-run of
        the head): for networks that use the encoder's features besides the segmentation."""
        feats = self._encoder(x)
        return feats, self.head(self._decoder(feats))

    def encoder_parts(self) -> Sequence[nn.Module]:
        enc = getattr(self, self.encoder_attr)
        return [enc, self.decoder] if self.dropout_at == "head" else [enc]


def conv_block(dims: int, cin: int, cout: int, n: int = 2) -> nn.Sequential:
    """``n`` times (3x3[x3] conv, batch norm, ReLU)."""
    Conv = nn.Conv2d if dims == 2 else nn.Conv3d
    Norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [
            Conv(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
            Norm(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class SegHead(nn.Module):
    """Dropout → conv block → 1x1 conv to K classes → upsample by ``scale`` (bilinear/trilinear)."""

    def __init__(self, dims: int, cin: int, num_classes: int, dropout: float, scale: int = 1) -> None:
        super().__init__()
        Conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims = dims
        self.dropout = spatial_dropout(dims, dropout)
        self.block = conv_block(dims, cin, cin, n=1)
        self.classifier = Conv(cin, num_classes, 1)
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.block(self.dropout(x)))
        if self.scale != 1:
            mode = "bilinear" if self.dims == 2 else "trilinear"
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode=mode, align_corners=False)
        return x
