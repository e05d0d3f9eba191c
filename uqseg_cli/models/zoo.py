"""The built-in architectures, registered by name."""

from __future__ import annotations

from uqseg_cli.models.fpn import FPNSeg
from uqseg_cli.models.registry import register_model
from uqseg_cli.models.swin_unet import SwinUNet
from uqseg_cli.models.unet import UNet


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
