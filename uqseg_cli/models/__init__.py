"""Segmentation networks: registry (`create_model`), architectures and checkpoints.

timm style: each architecture file registers its builders with ``@register_model`` when imported, and this package
imports them, so ``create_model`` knows every built-in model and the registry imports no model file (no cycle).
"""

# importing the architecture files registers them
from uqseg_cli.models import fpn, swin_unet, unet  # noqa: E402,F401
from uqseg_cli.models.base import DROPOUT_PLACES, Features, SegModel, dropout_modules
from uqseg_cli.models.registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "DROPOUT_PLACES",
    "Features",
    "ModelInfo",
    "SegModel",
    "count_parameters",
    "create_model",
    "dropout_modules",
    "list_models",
    "model_info",
    "register_model",
]
