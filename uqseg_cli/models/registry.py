"""Model registry (timm style): ``create_model(name, ...)`` builds any registered segmentation network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from uqseg_cli.errors import UqsegError
from uqseg_cli.models.base import SegModel


@dataclass(frozen=True)
class ModelInfo:
    """One registered architecture: name, spatial dims, builder, description and default keyword arguments."""

    name: str
    dims: int
    builder: Callable[..., SegModel]
    description: str
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, dims: int, description: str, **defaults) -> Callable:
    """Decorator: register ``builder(in_channels, num_classes, dropout, pretrained, **kw) -> SegModel``."""

    def wrap(builder: Callable[..., SegModel]) -> Callable[..., SegModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, dims, builder, description, dict(defaults))
        return builder

    return wrap


def list_models() -> list[ModelInfo]:
    """Registered models, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def model_info(name: str) -> ModelInfo:
    """The `ModelInfo` of ``name``; `UqsegError` naming the known models otherwise."""
    if name not in _REGISTRY:
        raise UqsegError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(
    name: str,
    in_channels: int = 3,
    num_classes: int = 2,
    dropout: float = 0.2,
    pretrained: bool = False,
    **kw,
) -> SegModel:
    """Build the registered model ``name``.

    ``dropout`` is the spatial-dropout rate in the decoder (``dropout_at="head"`` by default: one layer before the
    segmentation head; ``"decoder"``: every decoder block). ``pretrained`` asks timm for hub weights of the
    backbone (needs network access; ignored by models without a timm backbone). Extra keyword arguments go to
    the builder (e.g. ``img_size=(256, 256)`` for ``swin-unet``, ``channels=(...)`` for the U-Nets).
    The returned model records ``arch`` and ``init_args`` so a checkpoint can rebuild it.
    """
    info = model_info(name)
    args = {**info.defaults, **kw}
    try:
        model = info.builder(
            in_channels=int(in_channels),
            num_classes=int(num_classes),
            dropout=float(dropout),
            pretrained=bool(pretrained),
            **args,
        )
    except (TypeError, ValueError) as exc:
        raise UqsegError(f"model {name}: {exc}") from exc
    model.arch = name
    model.init_args = {
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "dropout": float(dropout),
        **_jsonable(args),
    }
    return model


def count_parameters(name: str, in_channels: int = 3, num_classes: int = 2, **kw) -> int:
    """Parameter count of ``name`` (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        return create_model(name, in_channels=in_channels, num_classes=num_classes, **kw).num_parameters()


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
