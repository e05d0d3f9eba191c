"""What a quality model (``quality.pt``) holds, as a JSON-able dict (``uqseg info quality.pt``), and
:func:`describe_checkpoint`, which tells a quality model from a segmenter (models/describe.py) by its header.

The ``meta`` of a quality checkpoint is a plain dict (quality/checkpoint.py); it is read here key by key.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from uqseg_cli.models.describe import describe_segmenter
from uqseg_cli.quality.checkpoint import FORMAT, read_quality_checkpoint


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
    meta = loaded["meta"]
    state = loaded.get("state_dict") or {}
    seg = meta.get("segmenter")
    if isinstance(seg, str):  # older files keep it as text
        seg = {"description": seg}
    d = {
        "file": str(path),
        "kind": "quality model",
        "framework": meta.get("framework"),
        "method": meta.get("method"),
        "measure": meta.get("measure"),
        "target": meta.get("target", "dice"),
        "train_cases": len(meta.get("train_cases", [])),
        "segmenter": seg or {},
    }
    if meta.get("framework") == "features":
        d["architecture"] = "linear and random-forest regression on aggregated features"
        d["features"] = list(meta.get("features", []))
        d["models"] = sorted((loaded.get("arrays") or {}).keys())
    else:
        d["architecture"] = f"{meta.get('backbone')} ({meta.get('dims')}D CNN), sigmoid output"
        d["parameters"] = int(sum(int(t.numel()) for t in state.values()))
        d["input"] = {"size": meta.get("input_size"), "channels": meta.get("channels"),
                      "classes": meta.get("num_classes")}
        d["training"] = meta.get("training", {})
    return d
