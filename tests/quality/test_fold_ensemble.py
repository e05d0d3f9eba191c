"""The fold ensemble of the regression CNNs (``score --cv K``): out-of-fold predictions from the fold models, new
cases from the mean of the K fold models and the final model, every model reading one set of input statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from uqseg_cli.quality import scoring
from uqseg_cli.quality.checkpoint import load_quality_model, save_quality_model
from uqseg_cli.quality.crossfit import assign_folds
from uqseg_cli.quality.inputs import standardize
from uqseg_cli.quality.models import load_quality_models
from uqseg_cli.quality.training import FitConfig, predict_cnn

from .test_cnn import META, _synthetic

N, N_LAB, K = 24, 18, 3
CFG = FitConfig(epochs=2, patience=2, batch_size=8, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def runs():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = _synthetic(N, seed=4)
    labelled = np.arange(N) < N_LAB
    ids = [f"c{i:02d}" for i in range(N)]
    long = pd.DataFrame({"case": ids, "method": "tta", "measure": "entropy", "region": "foreground", "value": 0.0})
    batch = scoring.Batch(ids, np.where(labelled, y, np.nan), np.zeros(N, bool), long, ["entropy"])
    batch.labelled = labelled
    folds = assign_folds(N_LAB, K, 0)
    out = {fe: scoring.predict_cnn_framework(batch, x, META, folds, CFG, "cpu", fold_ensemble=fe)
           for fe in (True, False)}
    yield x, folds, out
    torch.set_num_threads(threads)


def test_new_cases_get_the_mean_of_the_fold_models_and_the_final_model(runs):
    x, folds, out = runs
    p = out[True]
    meta = p.model_meta
    assert meta.fold_models == K and len(meta.training["folds"]) == K
    # one set of statistics for every member: those of all labelled inputs (population std), by numpy
    xl = x[:N_LAB].double().numpy()
    np.testing.assert_allclose(meta.channel_mean, xl.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(meta.channel_std, xl.std(axis=(0, 2, 3)), rtol=1e-12)
    nets = load_quality_models(meta, {**p.model.state_dict(), **p.state_dict})  # as quality.pt holds them
    assert len(nets) == K + 1
    xs = standardize(x, meta)
    each = np.stack([predict_cnn(net, xs) for net in nets])  # (K + 1, N): final, then fold 0 .. K-1
    np.testing.assert_allclose(p.predicted[N_LAB:], each[:, N_LAB:].mean(axis=0), rtol=0, atol=1e-12)
    # a labelled case of fold k is predicted by fold model k, which never saw it
    for k in range(K):
        idx = np.flatnonzero(folds == k)
        np.testing.assert_allclose(p.predicted[idx], each[1 + k, idx], rtol=0, atol=1e-12)
    assert (p.split[:N_LAB] == "oof").all() and (p.split[N_LAB:] == "test").all()
    assert not np.allclose(each[0], each[1])  # the members differ: the mean is not one model's prediction


def test_without_the_ensemble_only_new_cases_change(runs):
    x, _, out = runs
    a, b = out[True], out[False]
    assert b.state_dict is None and b.model_meta.fold_models is None
    np.testing.assert_array_equal(a.predicted[:N_LAB], b.predicted[:N_LAB])  # same fold models, same OOF
    final = predict_cnn(b.model, standardize(x, b.model_meta))
    np.testing.assert_array_equal(b.predicted[N_LAB:], final[N_LAB:])
    # the final model is the same network either way
    torch.testing.assert_close(a.model.state_dict(), b.model.state_dict(), rtol=0, atol=0)


def test_saved_ensemble_loads_its_final_model_and_refuses_a_wrong_count(runs, tmp_path):
    import dataclasses

    x, _, out = runs
    p = out[True]
    save_quality_model(tmp_path / "q.pt", p.model_meta, p.model, state_dict=p.state_dict)
    model, meta = load_quality_model(tmp_path / "q.pt")  # explain's view: the final model
    assert meta.fold_models == K
    xs = standardize(x, meta)
    np.testing.assert_array_equal(predict_cnn(model, xs), predict_cnn(p.model, xs))
    with pytest.raises(RuntimeError, match="3 fold model"):
        load_quality_models(dataclasses.replace(meta, fold_models=2), {**p.model.state_dict(), **p.state_dict})
