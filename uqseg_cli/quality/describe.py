"""What a quality model (``quality.pt``) holds, as a JSON-able dict (``uqseg info quality.pt``), and
:func:`describe_checkpoint`, which tells a quality model from a segmenter (models/describe.py) by its header.

The ``meta`` of a quality checkpoint is a :class:`~uqseg_cli.quality.meta.QualityMeta` (quality/checkpoint.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from uqseg_cli.models.describe import describe_segmenter
from uqseg_cli.quality.checkpoint import FORMAT, read_quality_checkpoint
from uqseg_cli.quality.meta import QualityMeta


def checkpoint_format(path: Path) -> str | None:
    """The ``format`` header of a torch file (``weights_only=True``), or None when it has none or is unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
        return payload.get("format") if isinstance(payload, dict) else None
    except Exception:
        return None  # the reader of the file says what is wrong, in one line


def describe_checkpoint(path: Path) -> dict:
    """A JSON-able description of a segmenter (``seg.pt``) or quality model (``quality.pt``)."""
    if checkpoint_format(path) == FORMAT:
        return describe_quality_model(path)
    return describe_segmenter(path)


def describe_quality_model(path: Path) -> dict:
    """Framework, method/measure, target, training cases, segmenter; the CNN's input and training record, or the
    feature regressors' features and models."""
    loaded = read_quality_checkpoint(path)
    meta: QualityMeta = loaded["meta"]
    state = loaded.get("state_dict") or {}
    seg = meta.segmenter
    if isinstance(seg, str):  # older files keep it as text
        seg = {"description": seg}
    d = {
        "file": str(path),
        "kind": "quality model",
        "framework": meta.framework,
        "method": meta.method,
        "measure": meta.measure,
        "target": meta.target,
        "train_cases": len(meta.train_cases or []),
        "segmenter": seg or {},
    }
    if meta.framework == "features":
        d["architecture"] = "linear and random-forest regression on aggregated features"
        d["features"] = list(meta.features or [])
        d["models"] = sorted((loaded.get("arrays") or {}).keys())
    elif meta.framework == "critic":
        from uqseg_cli.quality.critic import critic_arch
        from uqseg_cli.quality.critic_head import HEAD_TEXT, critic_head_of

        tta = int(meta.critic_tta or 1)
        heads = HEAD_TEXT[critic_head_of(loaded.get("arrays") or {})]
        d["architecture"] = (f"{meta.critics} critics {critic_arch(meta)} (one per fold; mean of their features; "
                             f"{tta} symmetr{'y' if tta == 1 else 'ies'} each) + {heads}")
        d["parameters"] = int(sum(int(t.numel()) for t in state.values()))
        d["input"] = {"size": meta.input_size, "channels": meta.channels, "classes": meta.num_classes}
        d["features"] = list(meta.features or [])
        d["training"] = {"critics": (meta.training or {}).get("critics", [])}
    else:
        arch = (f"fpn-{meta.backbone} that also learns the reference mask; sigmoid head on its pooled encoder and "
                "the soft Dice / volume ratio of its mask and the segmentation") if meta.learn_mask else (
            f"{meta.backbone} ({meta.dims}D CNN), sigmoid output")
        d["architecture"] = arch + (
            f"; mean of the final model and {meta.fold_models} fold models" if meta.fold_models else "")
        d["parameters"] = int(sum(int(t.numel()) for t in state.values()))
        d["input"] = {"size": meta.input_size, "channels": meta.channels, "classes": meta.num_classes}
        d["training"] = meta.training if meta.training is not None else {}
    return d
