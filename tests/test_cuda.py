"""CUDA paths (`pytest -m cuda`, run by benchmarks/gpu.sh): skipped where torch sees no GPU.

Deterministic inference and TTA on the GPU agree with the CPU (float32 to 1e-4; float16 autocast to 2e-2 and the
same argmax almost everywhere). MC dropout draws its masks on the device (a CUDA generator), so GPU samples are
reproducible on the GPU but not equal to the CPU's: there we check reproducibility and cached == full passes.
"""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from uqseg_cli.bayes.sampling import SamplePlan, sample_case
from uqseg_cli.io.store import write_array
from uqseg_cli.models import create_model
from uqseg_cli.models.checkpoint import Checkpoint
from uqseg_cli.models.inference import Predictor
from uqseg_cli.models.preprocessing import Preprocessing

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch"),
]


def _predictors(arch="fpn-resnet18", size=64, amp=False):
    torch.manual_seed(0)
    model = create_model(arch, 3, 2, 0.2)
    prep = Preprocessing("photo", 3, [size, size], "stretch", 255.0, None, [0.5] * 3, [0.25] * 3)
    ckpt = Checkpoint(arch, model.init_args, prep, ["background", "lesion"])
    cpu = Predictor(copy.deepcopy(model), ckpt, "cpu")
    gpu = Predictor(copy.deepcopy(model), ckpt, "cuda", amp=amp)
    return cpu, gpu


def _image(shape=(3, 70, 90), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _sample(pred, methods, T, image):
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        g = f.create_group("case")
        sample_case("c0", image, (1.0, 1.0), [pred], SamplePlan(methods, T, seed=3, max_batch=4), g,
                    write_array=write_array)
        return {m: {k: g[m][k][()] for k in ("sum_p", "sum_logp", "sum_entropy", "volumes")} for m in methods}


def test_predict_proba_gpu_matches_cpu():
    cpu, gpu = _predictors()
    img = _image()
    a, b = cpu.predict_proba(img).numpy(), gpu.predict_proba(img).numpy()
    np.testing.assert_allclose(b, a, atol=1e-4)


def test_predict_proba_amp_close_to_cpu():
    cpu, gpu = _predictors(amp=True)
    img = _image()
    a, b = cpu.predict_proba(img).numpy(), gpu.predict_proba(img).numpy()
    np.testing.assert_allclose(b, a, atol=2e-2)
    assert np.mean(a.argmax(0) == b.argmax(0)) > 0.99


def test_tta_sums_gpu_match_cpu():
    cpu, gpu = _predictors()
    img = _image()
    a, b = _sample(cpu, ["tta"], {"tta": 8}, img), _sample(gpu, ["tta"], {"tta": 8}, img)
    for k in ("sum_p", "sum_entropy"):
        np.testing.assert_allclose(b["tta"][k], a["tta"][k], atol=1e-3)


def test_mc_dropout_on_gpu_is_reproducible_and_cached_equals_full():
    from uqseg_cli.bayes.accumulator import SampleAccumulator
    from uqseg_cli.bayes.mc_dropout import sample_mc_dropout
    from uqseg_cli.rng import case_generator

    _, gpu = _predictors()
    img = _image()
    r1, r2 = _sample(gpu, ["mcdropout"], {"mcdropout": 6}, img), _sample(gpu, ["mcdropout"], {"mcdropout": 6}, img)
    for k in r1["mcdropout"]:
        np.testing.assert_array_equal(r1["mcdropout"][k], r2["mcdropout"][k])
    sums = []
    for cache in (True, False):
        acc = SampleAccumulator(2, img.shape[1:], 6, (1.0, 1.0))
        sample_mc_dropout(gpu.model, gpu.chunks(img), gpu.restore, acc, generator=case_generator(3, "c0", "mcdropout"),
                          max_batch=4, cache_encoder=cache)
        sums.append(acc.result().sum_p)
    np.testing.assert_allclose(sums[0], sums[1], atol=1e-4)


def test_accumulator_takes_gpu_log_probabilities():
    from uqseg_cli.bayes.accumulator import SampleAccumulator

    lp = torch.log_softmax(torch.randn(3, 2, 8, 9, generator=torch.Generator().manual_seed(0)), 1)
    cpu, gpu = SampleAccumulator(2, (8, 9), 3, (1.0, 1.0)), SampleAccumulator(2, (8, 9), 3, (1.0, 1.0))
    cpu.add(lp, 0)
    gpu.add(lp.cuda(), 0)
    a, b = cpu.result(), gpu.result()
    np.testing.assert_allclose(b.sum_p, a.sum_p, atol=1e-6)
    np.testing.assert_array_equal(b.volumes, a.volumes)
