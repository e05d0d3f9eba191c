"""``quality.pt``: everything needed to predict, loadable with ``torch.load(weights_only=True)``.

Contents: ``{"format": "uqseg-quality/1", "version": 1, "meta": {...}, "state_dict": {...}, "arrays": {...}}``.
``meta`` is :class:`~uqseg_cli.quality.meta.QualityMeta` as plain Python values: framework, method, measure(s),
target, backbone, dims, input size, channel names, the per-channel normalisation statistics, the feature names
(features framework), the training record and the cases it was fitted on. ``state_dict`` holds the CNN weights;
``arrays`` the exported feature models (name → tensors).

``version`` counts changes of the layout; files written before it existed have none and are version 1. A file of
another version is refused in one line (a newer uqseg wrote it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from uqseg_cli.errors import InputError
from uqseg_cli.io.atomic import atomic_write
from uqseg_cli.quality.inputs import FRAMEWORKS, FRAMEWORKS_CNN
from uqseg_cli.quality.mask_regressor import MaskRegressor
from uqseg_cli.quality.meta import FORMAT, QualityMeta
from uqseg_cli.quality.models import QualityRegressor, load_quality_models

VERSION = 1
"""The layout version written and the only one read."""


def _plain(obj):
    """``meta.to_dict()`` as plain JSON types (numpy scalars and arrays converted), so ``weights_only`` loading
    accepts it."""

    def conv(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot store {type(o).__name__} in a quality checkpoint")

    return json.loads(json.dumps(obj, default=conv, allow_nan=True))


def save_quality_model(
    path: Path | str,
    meta: QualityMeta,
    model: QualityRegressor | None = None,
    arrays: dict[str, dict[str, np.ndarray]] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a quality checkpoint atomically (temporary name, then ``os.replace``); the weights are ``model``'s and
    ``state_dict``'s (further networks under prefixes: a critic model's ``critic<k>.*``, a fold ensemble's
    ``fold<k>.*``)."""
    state = {**(model.state_dict() if model is not None else {}), **(state_dict or {})}
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "meta": _plain(meta.to_dict()),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "arrays": {
            name: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in st.items()}
            for name, st in (arrays or {}).items()
        },
    }
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def read_quality_checkpoint(path: Path | str) -> dict:
    """The checkpoint dict (``weights_only=True``), checked: ``meta`` comes back as :class:`QualityMeta`, arrays
    as numpy, ``version`` is set (1 for files without one). One-line `InputError` otherwise."""
    from uqseg_cli.io.untrusted import load_torch_file

    path = Path(path)
    obj = load_torch_file(path, "uqseg quality model")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: not a uqseg quality model (format {fmt!r}, expected {FORMAT!r})")
    version = obj.get("version", 1)  # files written before the version existed are version 1
    if version != VERSION:
        raise InputError(
            f"{path}: quality model version {version!r} is not supported (this uqseg reads version {VERSION}; "
            "was it written by a newer uqseg?)"
        )
    meta = obj.get("meta")
    if not isinstance(meta, dict) or meta.get("framework") not in FRAMEWORKS:
        raise InputError(f"{path}: unknown framework {meta.get('framework') if isinstance(meta, dict) else meta!r}")
    try:
        obj["meta"] = QualityMeta.from_dict(meta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: damaged quality model meta ({exc})") from None
    obj["version"] = version
    obj["arrays"] = {n: {k: v.numpy() for k, v in st.items()} for n, st in obj.get("arrays", {}).items()}
    return obj


def load_quality_model(path: Path | str) -> tuple[QualityRegressor | MaskRegressor, QualityMeta]:
    """The CNN regressor of a ``quality.pt`` (eval mode, CPU; of a fold ensemble, its final model) and its ``meta``.

    ``model(x)`` takes :func:`~uqseg_cli.quality.inputs.build_inputs` of a case (batched) and returns ``(N,)``
    predicted quality; ``model.embed(x)`` the penultimate embedding; ``model.gradcam_layer`` the Grad-CAM layer.
    """
    obj = read_quality_checkpoint(path)
    meta: QualityMeta = obj["meta"]
    if meta.framework not in FRAMEWORKS_CNN:
        what = "critics and a regression on features" if meta.framework == "critic" else (
            "regression on aggregated features")
        raise InputError(f"{path}: is a {meta.framework!r} quality model ({what}), not a CNN regressor")
    try:
        model = load_quality_models(meta, obj["state_dict"], final_only=True)[0]
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match the model described in it: {exc}") from None
    return model, meta
