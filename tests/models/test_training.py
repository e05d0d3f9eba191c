"""Training: loss and schedule against direct definitions, augmentation invariants, tiny models that overfit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uqseg_cli.errors import InputError, UqsegError
from uqseg_cli.io.readers import Case
from uqseg_cli.models.checkpoint import load_checkpoint, save_checkpoint
from uqseg_cli.models.inference import Predictor
from uqseg_cli.training.augment import AugmentConfig, augment_batch
from uqseg_cli.training.data import (
    assign_folds,
    check_training_cases,
    data_fingerprint,
    sample_patches,
    split_train_val,
)
from uqseg_cli.training.loop import (
    TrainOptions,
    cosine_lr,
    dice_ce_loss,
    mean_foreground_dice,
    plan_members,
    train_member,
)


def disks(n, size=(32, 32), seed=0, channels=3):
    """Photos with one bright disk (label 1) on a dark textured background."""
    rng = np.random.default_rng(seed)
    cases = []
    yy, xx = np.mgrid[: size[0], : size[1]]
    for i in range(n):
        cy, cx = rng.uniform(10, size[0] - 10), rng.uniform(10, size[1] - 10)
        r = rng.uniform(5, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
        img = rng.integers(0, 60, (channels, *size)) + 150 * mask[None]
        cases.append(Case(f"c{i:02d}", img.astype(np.uint8), (1.0, 1.0), mask, None, f"c{i:02d}.png"))
    return cases


def test_dice_ce_loss_matches_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    y = torch.randint(0, 3, (2, 5, 4))
    p = torch.softmax(logits, 1)
    ce = -torch.log(p.gather(1, y[:, None])).mean()
    dices = []
    for k in (1, 2):
        a, b = p[:, k], (y == k).float()
        dices.append((2 * (a * b).sum() + 1) / (a.sum() + b.sum() + 1))
    torch.testing.assert_close(dice_ce_loss(logits, y), ce + 1 - torch.stack(dices).mean())


def test_cosine_schedule():
    assert cosine_lr(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 10) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(40, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.4)))


def test_mean_foreground_dice_conventions():
    ref = np.array([[0, 1, 1], [2, 2, 0]])
    assert mean_foreground_dice(ref, ref, 3) == 1.0
    seg = np.array([[0, 1, 0], [2, 0, 0]])
    assert mean_foreground_dice(seg, ref, 3) == pytest.approx(np.mean([2 / 3, 2 / 3]))
    assert mean_foreground_dice(np.zeros((2, 2)), np.zeros((2, 2)), 2) == 1.0


def test_augmentation_moves_images_and_labels_together():
    """A label that marks exactly the bright pixels still marks them after the geometric transform."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 8:20, 10:26] = 1.0
    y = (x[:, 0] > 0.5).long()
    cfg = AugmentConfig(brightness=0, contrast=0, colour=0)
    xa, ya = augment_batch(x, y, torch.zeros(1), torch.ones(1), False, cfg, g)
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == torch.long
    agree = ((xa[:, 0] > 0.5).long() == ya).float().mean()
    assert agree > 0.97
    assert not torch.equal(ya, y)  # something moved
    xo, yo = augment_batch(x, y, torch.zeros(1), torch.ones(1), False, AugmentConfig(enabled=False), g)
    assert xo is x and yo is y


def test_augmentation_3d_flips_and_jitter_are_seeded():
    x = torch.randn(3, 1, 4, 5, 6)
    y = (x[:, 0] > 0).long()
    a = augment_batch(x, y, torch.zeros(1), torch.ones(1), False, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(x, y, torch.zeros(1), torch.ones(1), False, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # flips keep the label/intensity correspondence: the jitter is monotone, so sign patterns survive up to the
    # per-image affine map; check the label set of each image is the flipped original
    for i in range(3):
        assert int(a[1][i].sum()) == int(y[i].sum())


def test_split_and_folds():
    cases = disks(10)
    tr, va = split_train_val(cases, 0.2, 0)
    assert len(va) == 2 and len(tr) == 8 and not {c.id for c in tr} & {c.id for c in va}
    assert [c.id for c in split_train_val(cases, 0.2, 0)[1]] == [c.id for c in va]
    for c, s in zip(cases, ["train"] * 6 + ["val"] * 3 + ["test"], strict=True):
        c.meta["split"] = s
    tr, va = split_train_val(cases, 0.5, 0)
    assert len(tr) == 6 and len(va) == 3
    folds = assign_folds([f"x{i}" for i in range(10)], 3, 0)
    assert sorted(sum(folds, [])) == sorted(f"x{i}" for i in range(10))
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    with pytest.raises(UqsegError, match="folds"):
        assign_folds(["a", "b"], 3, 0)


def test_fold_plan_holds_each_fold_out():
    cases = disks(9)
    plan = plan_members(cases, TrainOptions(folds=3, val_fraction=0.2))
    held_all = []
    for member, fold, tr, va, held in plan:
        seen = {c.id for c in tr} | {c.id for c in va}
        assert member == fold and not seen & set(held)
        held_all += held
    assert sorted(held_all) == [c.id for c in cases]


def test_check_training_cases():
    cases = disks(2)
    assert check_training_cases(cases) == (2, 3, 2)
    cases[0].mask = None
    with pytest.raises(InputError, match="c00"):
        check_training_cases(cases)


def test_patches_stay_aligned_with_labels():
    g = torch.Generator().manual_seed(0)
    vol = torch.arange(6 * 7 * 8, dtype=torch.float32).view(1, 6, 7, 8)
    lab = (vol[0] % 5 == 0).long()
    xs, ys = sample_patches([vol], [lab], 6, (8, 8, 8), torch.tensor([-1.0]), g)
    assert xs.shape == (6, 1, 8, 8, 8) and ys.shape == (6, 8, 8, 8)
    inside = xs[:, 0] >= 0
    assert torch.equal(ys[inside], (xs[:, 0][inside] % 5 == 0).long())
    assert (ys[~inside] == 0).all()


def test_fingerprint_changes_with_data():
    a = disks(3)
    b = disks(3)
    assert data_fingerprint(a) == data_fingerprint(b)
    b[1].mask = b[1].mask.copy()
    b[1].mask[0, 0] ^= 1
    assert data_fingerprint(a) != data_fingerprint(b)


TINY = {"channels": [8, 16, 32]}


def test_tiny_unet_overfits_synthetic_disks(tmp_path):
    torch.set_num_threads(2)
    cases = disks(6)
    opts = TrainOptions(
        arch="unet-small",
        epochs=25,
        batch_size=3,
        lr=1e-2,
        model_kwargs=TINY,
        val_fraction=0.0,
        input_size=[32, 32],
        augment=AugmentConfig(enabled=False),
    )
    res = train_member(cases, [], opts, 0, torch.device("cpu"), 2, 3, ["bg", "disk"])
    p = Predictor(res.model, res.meta)
    dices = [mean_foreground_dice(p.predict_proba(c.image).argmax(0).numpy(), c.mask, 2) for c in cases]
    assert min(dices) > 0.9, dices
    assert res.meta.train_case_ids == [c.id for c in cases] and res.meta.val_dice is None
    assert res.meta.best_epoch == 25 and len(res.log) == 25
    # the checkpoint of a trained model predicts the same
    path = save_checkpoint(tmp_path / "seg.pt", res.model, res.meta)
    model2, meta2 = load_checkpoint(path)
    assert torch.equal(Predictor(model2, meta2).predict_proba(cases[0].image), p.predict_proba(cases[0].image))


def test_training_is_reproducible_and_seed_dependent():
    torch.set_num_threads(2)
    cases = disks(4)
    kw = dict(arch="unet-small", epochs=2, batch_size=2, model_kwargs=TINY, input_size=[32, 32])
    va = cases[:1]
    a = train_member(cases[1:], va, TrainOptions(**kw), 0, torch.device("cpu"), 2, 3, ["bg", "x"])
    b = train_member(cases[1:], va, TrainOptions(**kw), 0, torch.device("cpu"), 2, 3, ["bg", "x"])
    c = train_member(cases[1:], va, TrainOptions(**kw, seed=5), 0, torch.device("cpu"), 2, 3, ["bg", "x"])
    d = train_member(cases[1:], va, TrainOptions(**kw), 1, torch.device("cpu"), 2, 3, ["bg", "x"])
    sa, sb, sc, sd = (m.model.state_dict() for m in (a, b, c, d))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not all(torch.equal(sa[k], sd[k]) for k in sa)
    assert a.meta.val_dice == max(r.val_dice for r in a.log)
    assert [r.best for r in a.log].count(True) >= 1


def test_volume_slices_and_3d_patches_train():
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 30, (1, 12, 24, 24)).astype(np.float32)
    mask = np.zeros((12, 24, 24), np.uint8)
    mask[3:9, 6:18, 5:15] = 1
    mask[5:7, 8:12, 8:12] = 2
    vol[0][mask == 1] += 150
    vol[0][mask == 2] += 260
    case = Case("v1", vol, (2.0, 1.0, 1.0), mask, None, "v1.nii.gz")
    opts2d = TrainOptions(arch="unet-small", epochs=1, batch_size=4, model_kwargs=TINY, val_fraction=0)
    r2 = train_member([case], [], opts2d, 0, torch.device("cpu"), 3, 1, ["bg", "a", "b"])
    assert r2.meta.preprocessing.modality == "ct" and r2.meta.preprocessing.input_size == [24, 24]
    opts3d = TrainOptions(
        arch="unet3d-small",
        epochs=1,
        batch_size=2,
        patch_size=[16, 16, 16],
        patches_per_volume=2,
        input_size=[16, 16, 16],
        halo=2,
        model_kwargs={"channels": [4, 8]},
    )
    r3 = train_member([case], [case], opts3d, 0, torch.device("cpu"), 3, 1, ["bg", "a", "b"])
    assert r3.meta.val_dice is not None and 0 <= r3.meta.val_dice <= 1
    prob = Predictor(r3.model, r3.meta).predict_proba(vol)
    assert prob.shape == (3, 12, 24, 24)
    with pytest.raises(UqsegError, match="3D"):
        train_member(disks(2), [], opts3d, 0, torch.device("cpu"), 2, 3, ["bg", "x"])
    torch.testing.assert_close(prob.sum(0), torch.ones(12, 24, 24))
    assert F is not None
