"""One case of ``uqseg sample``: run the chosen samplers and write their sums into the case's HDF5 group.

Layout written per method (docs/architecture.md, ``samples.h5``): group ``<method>`` with ``sum_p``, ``sum_logp``
``(K, *spatial)`` float32, ``sum_entropy`` ``(*spatial)`` float32, ``volumes`` and ``soft_volumes`` ``(T, K)``
float64 (ml), ``votes`` ``(K, *spatial)`` uint16 (samples whose argmax is class k), ``overlap_volumes``
``(T, K)`` float64 (ml of sample t's class k inside the final segmentation's class k; with a segmentation),
optionally ``samples`` ``(T, K, *spatial)`` float16, and attributes ``T`` plus how the samples were
drawn (``mode`` for MC dropout, ``transforms`` for TTA, ``members`` for the ensemble, ``member`` = which
checkpoint MC dropout / TTA used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

from uqseg_cli.bayes.accumulator import SampleAccumulator
from uqseg_cli.bayes.ensemble import sample_ensemble, sample_ensemble_own_inputs
from uqseg_cli.bayes.mc_dropout import can_cache_encoder, find_dropout, sample_mc_dropout
from uqseg_cli.bayes.tta import max_samples, sample_tta
from uqseg_cli.errors import InputError
from uqseg_cli.rng import case_generator

METHODS: tuple[str, ...] = ("mcdropout", "ensemble", "tta")


@dataclass
class SamplePlan:
    """What to sample per case. ``T`` maps method → number of samples."""

    methods: list[str]
    T: dict[str, int]
    seed: int = 0
    tta_intensity: float = 0.0
    keep_samples: bool = False
    max_batch: int | None = None
    amp: bool = False
    member_names: list[str] = field(default_factory=list)


def pick_member(case_id: str, train_ids: Sequence[Sequence[str]]) -> int:
    """The member MC dropout and TTA use for a case: the first that was not trained on it (out-of-fold), else 0."""
    for m, ids in enumerate(train_ids):
        if case_id not in set(ids):
            return m
    return 0


def _samples_dataset(g: h5py.Group, T: int, K: int, shape: tuple[int, ...]) -> h5py.Dataset:
    chunk = (1, 1) + tuple(min(s, 64) for s in shape)
    return g.create_dataset(
        "samples", shape=(T, K, *shape), dtype=np.float16, chunks=chunk, compression="gzip", compression_opts=4,
        shuffle=True,
    )


def sample_case(
    case_id: str,
    image: np.ndarray,
    spacing: Sequence[float],
    predictors: Sequence,
    plan: SamplePlan,
    group: h5py.Group,
    *,
    train_ids: Sequence[Sequence[str]] = (),
    write_array=None,
    segmentation: np.ndarray | None = None,
) -> dict[str, dict]:
    """Sample one case with every method of ``plan`` and write the results under ``group``.

    Args:
        case_id: the case (seeds the per-case generators).
        image: ``(C, *spatial)`` in source intensities (as stored in ``predict.h5``).
        spacing: mm per spatial axis.
        predictors: one ``Predictor`` per checkpoint (member 0 first); they share preprocessing.
        plan: methods, sample counts and options.
        group: ``/cases/<id>`` of the output (journal) file.
        train_ids: per member, the case ids it was trained on (to pick an out-of-fold member).
        write_array: the store's ``write_array(group, name, array)``.
        segmentation: ``(*spatial)`` the final segmentation from predict.h5 (for ``overlap_volumes``), or None.
    Returns: per method, the attributes written (for logging).
    """
    spatial = tuple(int(s) for s in image.shape[1:])
    if len(spacing) != len(spatial):
        raise InputError(f"case {case_id}: spacing {tuple(spacing)} does not match the image grid {spatial}")
    K = int(predictors[0].num_classes)
    out: dict[str, dict] = {}
    for method in plan.methods:
        T = int(plan.T[method])
        g = group.create_group(method)
        sink = None
        if plan.keep_samples:
            ds = _samples_dataset(g, T, K, spatial)

            def sink(t0, index, probs, ds=ds):
                ds[(slice(t0, t0 + probs.shape[0]), slice(None), *index)] = probs.numpy().astype(np.float16)

        acc = SampleAccumulator(K, spatial, T, spacing, sample_sink=sink, segmentation=segmentation)
        attrs: dict = {"T": T}
        if method == "ensemble":
            ref = predictors[0].ckpt.preprocessing.to_dict()
            if all(p.ckpt.preprocessing.to_dict() == ref for p in predictors[1:]):
                sample_ensemble(
                    [p.model for p in predictors], predictors[0].chunks(image, case_id), predictors[0].restore, acc,
                    amp=plan.amp,
                )
            else:  # separately trained members: each normalises the image with its own statistics
                sample_ensemble_own_inputs(predictors, image, case_id, acc, amp=plan.amp)
            attrs["members"] = list(plan.member_names)
            attrs["members_trained_on_case"] = int(sum(case_id in set(ids) for ids in train_ids))
        else:
            m = pick_member(case_id, train_ids) if len(predictors) > 1 else 0
            pred = predictors[m]
            gen = case_generator(plan.seed, case_id, method)
            if method == "mcdropout":
                info = sample_mc_dropout(
                    pred.model, pred.chunks(image, case_id), pred.restore, acc, generator=gen,
                    max_batch=plan.max_batch, amp=plan.amp,
                )
                attrs["mode"] = info.mode
                attrs["dropout_modules"] = info.dropout_modules
            elif method == "tta":
                names = sample_tta(
                    pred.model, pred.chunks(image, case_id), pred.restore, acc, generator=gen,
                    intensity=plan.tta_intensity, max_batch=plan.max_batch, amp=plan.amp,
                )
                attrs["transforms"] = names
                attrs["intensity"] = float(plan.tta_intensity)
            else:
                raise ValueError(f"unknown method {method!r}")
            attrs["member"] = m
            if plan.member_names:
                attrs["checkpoint"] = plan.member_names[m]
        res = acc.result()
        write_array(g, "sum_p", res.sum_p)
        write_array(g, "sum_logp", res.sum_logp)
        write_array(g, "sum_entropy", res.sum_entropy)
        write_array(g, "volumes", res.volumes)
        write_array(g, "soft_volumes", res.soft_volumes)
        write_array(g, "votes", res.votes)
        if res.overlap_volumes is not None:
            write_array(g, "overlap_volumes", res.overlap_volumes)
        for k, v in attrs.items():
            g.attrs[k] = v
        out[method] = attrs
    return out


def check_mc_dropout(model: torch.nn.Module) -> str | None:
    """Why MC dropout cannot run on ``model`` (no dropout with p > 0), or None."""
    try:
        if not find_dropout(model):
            return "the model has no dropout layer with p > 0 (train it with --dropout > 0)"
    except ValueError as exc:
        return str(exc)
    return None


def mc_dropout_mode(model: torch.nn.Module) -> str:
    """``cached`` when the encoder runs once per chunk, ``full`` otherwise."""
    return "cached" if can_cache_encoder(model) else "full"


def resolve_T(methods: Sequence[str], T: int | None, members: int, intensity: float) -> tuple[dict[str, int], list]:
    """Samples per method and notes for the user. ``T`` (None = default 20) sets MC dropout and TTA; TTA is
    capped at its 8 distinct transforms unless intensity jitter is on; the ensemble has one sample per member."""
    notes = []
    t = 20 if T is None else int(T)
    if t < 1:
        raise ValueError(f"-T must be >= 1, got {t}")
    out = {}
    for m in methods:
        if m == "mcdropout":
            out[m] = t
        elif m == "ensemble":
            out[m] = members
        elif m == "tta":
            cap = max_samples(intensity)
            out[m] = t if cap is None else min(t, cap)
            if cap is not None and t > cap and T is not None:
                notes.append(f"tta: only {cap} distinct transforms without --tta-intensity; using T = {cap}")
    return out, notes
