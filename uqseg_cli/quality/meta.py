"""`QualityMeta`: the typed ``meta`` of a quality checkpoint (``quality.pt``, quality/checkpoint.py).

Two kinds of model share it. A *features* model (``framework="features"``: linear, forest and boosted regressions on
aggregated features) uses ``method``, ``measure``, ``target``, ``features``, ``combined_stats`` and ``train_cases``.
A *CNN* model (``framework`` seg-unc, img-seg-unc, hybrid or critic) uses the rest: its architecture and input
(``backbone`` … ``dropout``), the standardisation statistics found when fitting, the training record and the
segmenter whose predictions it was fitted on.

On disk ``meta`` is a plain dict (JSON types only, so ``torch.load(weights_only=True)`` reads it): `to_dict` writes
exactly the keys of the file — the keys of its kind, in file order; an optional key whose value is ``None`` (a CNN
model that was not started from a segmenter, a non-hybrid model's ``extra_*``) is left out, as files always did.
`from_dict` reads any version-1 meta, older files with fewer keys included (missing keys take the defaults below;
keys it does not know are ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

FORMAT = "uqseg-quality/1"
"""The ``format`` of a quality checkpoint (top level) and of its ``meta``."""

FEATURES_KEYS = ("format", "framework", "method", "measure", "target", "features", "combined_stats", "train_cases")
"""The keys of a features model's meta, in file order (all always written, ``combined_stats`` also when None)."""

CNN_KEYS = (
    "format", "framework", "method", "measure", "measures", "target", "backbone", "pretrained", "dims", "input_size",
    "num_classes", "image_channels", "channels", "dropout", "extra_features", "init_from", "channel_mean",
    "channel_std", "extra_median", "extra_mean", "extra_std", "init_tensors_from_segmenter", "training",
    "train_cases", "segmenter", "features", "combined_stats", "critics", "critic_tta", "fold_models",
    "learn_mask",
)
"""The keys of a CNN model's meta, in file order."""

CNN_ALWAYS = CNN_KEYS[: CNN_KEYS.index("dropout") + 1]
"""The CNN keys written even when None (the description `scoring.cnn_meta` builds); the others only when set."""


@dataclass(frozen=True)
class QualityMeta:
    """What a quality model is and how it was fitted (everything in ``quality.pt`` except weights and arrays).

    Build a changed copy with ``dataclasses.replace(meta, field=value)``; ``None`` means "not in the file".
    """

    framework: str
    """``features``, ``seg-unc``, ``img-seg-unc``, ``hybrid`` or ``critic``."""
    format: str = FORMAT
    """Repeats the checkpoint's format inside ``meta`` (files always had it)."""
    method: str | None = None
    """The sampling method whose uncertainty is the input (``tta``, ``mcdropout``, ...; ``joint``: every method's
    features side by side, features framework only)."""
    measure: str | None = None
    """The uncertainty measure the model was fitted for (``entropy``, ..., or ``combined``)."""
    target: str = "dice"
    """The quality predicted: ``dice`` or ``iou`` (mean over foreground classes, in [0, 1])."""
    train_cases: list[str] | None = None
    """Ids of the labelled cases the final model was fitted on (predictions for them are in-sample)."""

    # --- features framework
    features: list[str] | None = None
    """Feature names ``<measure>/<region>`` (``<method>:<measure>/<region>`` for ``joint``): the regressors' input
    columns, in order."""
    combined_stats: dict | None = None
    """`CombinedStats.to_json()`: the scale of the combined score the model was fitted on (None: computed from the
    scored file itself)."""

    # --- CNN frameworks: architecture and input
    measures: list[str] | None = None
    """The measures whose maps are input channels (``[measure]``, or every measure for ``combined``)."""
    backbone: str | None = None
    """timm backbone name for 2D models; ``smallcnn3d`` for 3D."""
    pretrained: bool | None = None
    """Whether fitting started from timm's ImageNet weights."""
    dims: int | None = None
    """2 or 3: spatial dimensions of the cases and the CNN."""
    input_size: list[int] | None = None
    """The fixed grid every channel is resampled to, in voxels (``dims`` values, e.g. ``[128, 128]``)."""
    num_classes: int | None = None
    """Classes of the segmentation, background included (one ``seg:<k>`` channel per foreground class)."""
    image_channels: int | None = None
    """Image channels among the inputs (0 for ``seg-unc``)."""
    channels: list[str] | None = None
    """Input channel names in order (``image:<c>``, ``seg:<k>``, ``unc:<measure>``, ``agree:<method>``); their
    number is the CNN's ``in_chans``."""
    dropout: float | None = None
    """Dropout before the linear head (None: 0.2)."""
    extra_features: list[str] | None = None
    """Hybrid models: the aggregated features (names as ``features``) joined to the embedding before the head."""
    init_from: str | None = None
    """Path of the segmenter checkpoint whose encoder started the backbone (None: not started from one)."""

    # --- CNN frameworks: found when fitting
    channel_mean: list[float] | None = None
    """Per-channel mean of the raw resampled training inputs (one value per ``channels`` entry)."""
    channel_std: list[float] | None = None
    """Per-channel population std of the same (a zero std stored as 1)."""
    extra_median: list[float] | None = None
    """Hybrid models: per-feature median of the training features (replaces missing values)."""
    extra_mean: list[float] | None = None
    """Hybrid models: per-feature mean of the imputed training features."""
    extra_std: list[float] | None = None
    """Hybrid models: per-feature std of the imputed training features (a zero std stored as 1)."""
    init_tensors_from_segmenter: int | None = None
    """How many backbone tensors were copied from the segmenter (set when an encoder was given)."""
    training: dict[str, Any] | None = None
    """The training record: ``epochs_run``, ``best_epoch`` (1-based), ``best_val_mse``, ``n_train``, ``n_val``,
    ``lr``, ``batch_size``, ``augment``, ``seed``, ``loss``."""
    segmenter: dict[str, Any] | str | None = None
    """The segmenter recorded in the predict file upstream (``predict_file``, ``predict_fingerprint``,
    ``checkpoint``, ``arch``, ...; ``{}`` if none; older files hold a text description)."""

    # --- critic framework (a CNN model too; also uses ``features`` and ``combined_stats`` for its regressor)
    critics: int | None = None
    """How many critics (one per cross-fitting fold) the file holds; a new case gets the mean of their features.
    ``features`` then lists the regressor's columns: the aggregated features, then ``critic/*``."""
    critic_tta: int | None = None
    """How many of ``critic.tta_transforms`` (flips, quarter turns) each critic averages its probabilities over;
    ``None`` (files written before critic TTA): 1, the input as it is."""

    # --- regression CNNs cross-fitted with a fold ensemble
    fold_models: int | None = None
    """How many cross-fitting fold models the file holds besides the final model (weights under ``fold<k>.``); a
    new case gets the mean of all ``fold_models + 1`` predictions, every model reading the inputs with this file's
    one set of statistics. ``None``: the final model alone (the default, ``--cv < 2``, older files)."""

    # --- regression CNNs that also learn the reference mask (quality/mask_regressor.py)
    learn_mask: bool | None = None
    """True: the CNN is a :class:`~uqseg_cli.quality.mask_regressor.MaskRegressor` (``fpn-<backbone>`` with a Dice
    head), trained on the reference masks too. ``None``: a plain regression CNN (older files)."""

    @property
    def is_cnn(self) -> bool:
        return self.framework != "features"

    @property
    def measure_list(self) -> list[str]:
        """The measures of the model: ``measures``, else ``[measure]`` (empty when neither is set)."""
        return list(self.measures or ([self.measure] if self.measure else []))

    def to_dict(self) -> dict[str, Any]:
        """The ``meta`` dict of the file: the keys of this kind of model, in file order."""
        if not self.is_cnn:
            return {k: getattr(self, k) for k in FEATURES_KEYS}
        return {k: getattr(self, k) for k in CNN_KEYS if k in CNN_ALWAYS or getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityMeta:
        """The meta of a file (version 1); raises ``TypeError``/``ValueError`` for a meta without a framework."""
        if not isinstance(d, dict) or not isinstance(d.get("framework"), str):
            raise ValueError("meta has no framework")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
