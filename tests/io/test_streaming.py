"""Training from cases that stay on disk: the same arrays and the same trained weights as loading everything."""

from __future__ import annotations

import numpy as np
import torch

from tests.models.fixtures import write_disks
from uqseg_cli.io.cases import discover_cases, load_case
from uqseg_cli.io.streaming import StreamedCase
from uqseg_cli.models import create_model
from uqseg_cli.training.data import StreamedImages, slices_2d
from uqseg_cli.training.loop import TrainOptions, make_preprocessing, train_members

torch.set_num_threads(1)


def test_streamed_case_reads_what_load_case_reads(tmp_path):
    images, masks = write_disks(tmp_path, 3)
    for spec in discover_cases(images, masks=masks):
        ref, sc = load_case(spec), StreamedCase.open(spec)
        assert sc.id == ref.id and sc.ndim == 2 and sc.spatial_shape == ref.spatial_shape
        assert np.array_equal(sc.image, ref.image) and np.array_equal(sc.mask, ref.mask)
        assert sc.spacing == ref.spacing and sc.source == ref.source
        assert sc.with_meta({"split": "val"}).meta == {"split": "val"} and sc.meta == ref.meta


def test_streamed_samples_equal_the_eager_ones_with_or_without_cache(tmp_path):
    images, masks = write_disks(tmp_path, 5)
    cases = [load_case(s) for s in discover_cases(images, masks=masks)]
    model = create_model("unet-small")
    prep = make_preprocessing(cases, TrainOptions(arch="unet-small", input_size=[32, 32]), model, 3)
    X, Y = slices_2d(cases, prep, 0.0, np.random.default_rng(0))
    idx = torch.tensor([4, 0, 2])
    for budget in (0, 1 << 30, 20_000):  # nothing cached, everything, the first few
        xs, ys = StreamedImages(cases, prep, cache_bytes=budget).batch(idx)
        assert torch.equal(xs, X[idx].float()) and torch.equal(ys, Y[idx].long())


def test_training_on_streamed_cases_gives_the_same_weights(tmp_path):
    images, masks = write_disks(tmp_path, 6)
    specs = discover_cases(images, masks=masks)
    opts = TrainOptions(arch="unet-small", epochs=2, batch_size=2, input_size=[32, 32], val_fraction=0.34, seed=3)
    (eager,) = list(train_members([load_case(s) for s in specs], opts, torch.device("cpu")))
    (streamed,) = list(train_members([StreamedCase.open(s) for s in specs], opts, torch.device("cpu")))
    a, b = eager.model.state_dict(), streamed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert eager.meta.val_dice == streamed.meta.val_dice
    assert eager.meta.data_fingerprint == streamed.meta.data_fingerprint
