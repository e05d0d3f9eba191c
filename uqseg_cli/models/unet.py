"""Small U-Nets for CPU training: ``unet-small`` (2D) and ``unet3d-small`` (native 3D)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from uqseg_cli.models.base import EncoderDecoderHead, Features, SegHead, check_dropout_args, conv_block, spatial_dropout
from uqseg_cli.models.registry import register_model


class UNet(EncoderDecoderHead):
    """U-Net with ``len(channels) - 1`` poolings, batch norm, transposed-conv upsampling and skip connections.

    Dropout (``dropout_at``): ``head`` — one spatial dropout before the head, `encode` runs encoder and decoder
    and returns the last decoder map ``[(N, channels[0], *spatial)]``; ``decoder`` — spatial dropout at the input
    of every decoder block and before the head, `encode` returns the encoder maps (finest first).
    Input: every spatial side a multiple of ``2 ** (len(channels) - 1)``.
    """

    encoder_attr = "encoder"

    def __init__(
        self,
        dims: int,
        in_channels: int = 3,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.2,
        dropout_at: str = "head",
    ) -> None:
        super().__init__(in_channels, num_classes)
        check_dropout_args(dropout, dropout_at)
        if dims not in (2, 3) or len(channels) < 2:
            raise ValueError(f"UNet needs dims 2 or 3 and at least 2 levels, got dims={dims}, channels={channels}")
        self.dims = dims
        self.size_multiple = 2 ** (len(channels) - 1)
        self.dropout_at = dropout_at
        ch = [int(c) for c in channels]
        Pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        Up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.encoder = nn.ModuleList([conv_block(dims, in_channels, ch[0])])
        for i in range(1, len(ch)):
            self.encoder.append(nn.Sequential(Pool(2), conv_block(dims, ch[i - 1], ch[i])))
        p_dec = dropout if dropout_at == "decoder" else 0.0
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.ups.append(Up(ch[i], ch[i - 1], 2, stride=2))
            self.blocks.append(nn.Sequential(spatial_dropout(dims, p_dec), conv_block(dims, 2 * ch[i - 1], ch[i - 1])))
        self.decoder = nn.ModuleList([self.ups, self.blocks])
        self.head = SegHead(dims, ch[0], num_classes, dropout, scale=1)

    def _encoder(self, x: torch.Tensor) -> Features:
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        return feats

    def _decoder(self, feats: Features) -> torch.Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


@register_model(
    "unet-small",
    dims=2,
    description="2D U-Net, 4 poolings, 16-256 channels; trains on 2 CPU cores",
    channels=(16, 32, 64, 128, 256),
    dropout_at="head",
)
def unet_small(in_channels, num_classes, dropout, pretrained=False, **kw) -> UNet:
    return UNet(2, in_channels, num_classes, dropout=dropout, **kw)


@register_model(
    "unet3d-small",
    dims=3,
    description="native 3D U-Net, 3 poolings, 8-64 channels; patch training",
    channels=(8, 16, 32, 64),
    dropout_at="head",
)
def unet3d_small(in_channels, num_classes, dropout, pretrained=False, **kw) -> UNet:
    return UNet(3, in_channels, num_classes, dropout=dropout, **kw)
