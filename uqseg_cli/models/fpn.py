"""Feature Pyramid Network decoders on timm ResNet backbones: ``fpn-resnet18``, ``fpn-resnet50``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uqseg_cli.models.base import EncoderDecoderHead, Features, SegHead, check_dropout_args, conv_block, spatial_dropout
from uqseg_cli.models.registry import register_model


class FPNSeg(EncoderDecoderHead):
    """timm backbone (features at strides 4, 8, 16, 32) + FPN top-down pathway + semantic merge at stride 4.

    Each pyramid level P_s (``pyramid_channels``) goes through a 3x3 conv block to ``segmentation_channels``,
    is upsampled to stride 4 and summed; the head (dropout, conv block, 1x1 conv) predicts K classes at stride 4,
    upsampled bilinearly x4 to the input size.

    Dropout (``dropout_at``): ``head`` — one spatial dropout before the head; `encode` returns the merged
    stride-4 map ``[(N, segmentation_channels, H/4, W/4)]``. ``decoder`` — spatial dropout on every pyramid
    level before its conv block and before the head; `encode` returns the backbone maps (stride 4 first).
    Input: H and W multiples of 32.
    """

    size_multiple = 32

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int = 2,
        dropout: float = 0.2,
        dropout_at: str = "head",
        pretrained: bool = False,
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
    ) -> None:
        super().__init__(in_channels, num_classes)
        check_dropout_args(dropout, dropout_at)
        import timm

        self.dims = 2
        self.dropout_at = dropout_at
        self.backbone = timm.create_model(
            backbone,
            features_only=True,
            out_indices=(1, 2, 3, 4),
            in_chans=in_channels,
            pretrained=pretrained,
        )
        enc_ch = self.backbone.feature_info.channels()
        P, S = int(pyramid_channels), int(segmentation_channels)
        self.lateral = nn.ModuleList([nn.Conv2d(c, P, 1) for c in enc_ch])
        self.smooth = nn.ModuleList([nn.Conv2d(P, P, 3, padding=1) for _ in enc_ch])
        p_dec = dropout if dropout_at == "decoder" else 0.0
        self.seg_blocks = nn.ModuleList(
            [nn.Sequential(spatial_dropout(2, p_dec), conv_block(2, P, S, n=1)) for _ in enc_ch]
        )
        self.decoder = nn.ModuleList([self.lateral, self.smooth, self.seg_blocks])
        self.head = SegHead(2, S, num_classes, dropout, scale=4)

    def _decoder(self, feats: Features) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 2, -1, -1):  # top-down
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        size = lat[0].shape[-2:]
        out = None
        for smooth, block, p in zip(self.smooth, self.seg_blocks, lat, strict=True):
            y = block(smooth(p))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return out

    def _encoder(self, x: torch.Tensor) -> Features:
        return list(self.backbone(x))


@register_model(
    "fpn-resnet18",
    dims=2,
    description="timm resnet18 + FPN decoder (128/64 channels)",
    dropout_at="head",
    pyramid_channels=128,
    segmentation_channels=64,
)
def fpn_resnet18(in_channels, num_classes, dropout, pretrained=False, **kw) -> FPNSeg:
    return FPNSeg("resnet18", in_channels, num_classes, dropout=dropout, pretrained=pretrained, **kw)


@register_model(
    "fpn-resnet50",
    dims=2,
    description="timm resnet50 + FPN decoder (256/128 channels)",
    dropout_at="head",
    pyramid_channels=256,
    segmentation_channels=128,
)
def fpn_resnet50(in_channels, num_classes, dropout, pretrained=False, **kw) -> FPNSeg:
    return FPNSeg("resnet50", in_channels, num_classes, dropout=dropout, pretrained=pretrained, **kw)
