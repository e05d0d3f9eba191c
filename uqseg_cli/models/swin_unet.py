"""``swin-unet``: timm Swin-Tiny encoder + U-shaped convolutional decoder with skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uqseg_cli.models.base import EncoderDecoderHead, Features, SegHead, check_dropout_args, conv_block, spatial_dropout
from uqseg_cli.models.registry import register_model


class SwinUNet(EncoderDecoderHead):
    """Swin-Tiny (timm ``swin_tiny_patch4_window7_224`` with ``img_size`` and ``window_size``) features at strides
    4, 8, 16, 32 — timm returns them channels-last (NHWC), they are permuted to NCHW — and a U-shaped decoder:
    upsample x2, concatenate the skip, conv block, three times; the head predicts at stride 4, upsampled x4.

    Swin's patch embedding fixes the input size at construction: ``img_size`` (H, W), both multiples of 32
    (default 256x256; window 8 so that 256 divides evenly). Other sizes are refused by `check_input`.
    Dropout (``dropout_at``): ``head`` — one spatial dropout before the head, `encode` returns the stride-4
    decoder map; ``decoder`` — spatial dropout at the input of every decoder block too, `encode` returns the
    four encoder maps.
    """

    size_multiple = 32

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        dropout: float = 0.2,
        dropout_at: str = "head",
        pretrained: bool = False,
        img_size: Sequence[int] = (256, 256),
        window_size: int = 8,
    ) -> None:
        super().__init__(in_channels, num_classes)
        check_dropout_args(dropout, dropout_at)
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 2 or any(s % 32 or s <= 0 for s in img_size):
            raise ValueError(f"swin-unet img_size must be two positive multiples of 32, got {img_size}")
        import timm

        self.dims = 2
        self.fixed_input_size = img_size
        self.dropout_at = dropout_at
        self.backbone = timm.create_model(
            "swin_tiny_patch4_window7_224",
            features_only=True,
            pretrained=pretrained,
            in_chans=in_channels,
            img_size=img_size,
            window_size=int(window_size),
        )
        enc_ch = self.backbone.feature_info.channels()  # 96, 192, 384, 768
        p_dec = dropout if dropout_at == "decoder" else 0.0
        self.blocks = nn.ModuleList()
        for i in range(len(enc_ch) - 1, 0, -1):
            self.blocks.append(
                nn.Sequential(spatial_dropout(2, p_dec), conv_block(2, enc_ch[i] + enc_ch[i - 1], enc_ch[i - 1]))
            )
        self.decoder = self.blocks
        self.head = SegHead(2, enc_ch[0], num_classes, dropout, scale=4)

    @property
    def input_rule(self) -> str:
        h, w = self.fixed_input_size
        return f"exactly {h}x{w} (img_size; any multiples of 32)"

    def _encoder(self, x: torch.Tensor) -> Features:
        return [f.permute(0, 3, 1, 2).contiguous() for f in self.backbone(x)]  # NHWC -> NCHW

    def _decoder(self, feats: Features) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


@register_model(
    "swin-unet",
    dims=2,
    description="timm Swin-Tiny encoder (window 8) + U-shaped conv decoder",
    dropout_at="head",
    img_size=(256, 256),
    window_size=8,
)
def swin_unet(in_channels, num_classes, dropout, pretrained=False, **kw) -> SwinUNet:
    return SwinUNet(in_channels, num_classes, dropout=dropout, pretrained=pretrained, **kw)
