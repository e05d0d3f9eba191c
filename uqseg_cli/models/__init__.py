"""Segmentation networks: registry (`create_model`), architectures and checkpoints."""

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
