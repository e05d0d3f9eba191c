"""``stages.predict`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch

from tests.models.fixtures import random_checkpoint, run_cli, write_disks
from uqseg_cli.errors import UqsegError
from uqseg_cli.io.store import StageFile, config_json
from uqseg_cli.stages import predict
from uqseg_cli.stages.base import Report, resume_config

torch.set_num_threads(1)


def _old_config(images, out, ck, masks=None, raters=None, paths=None, prob_dtype="float16", batch_size=8,
                nan_policy="error") -> dict:
    """The resume config as `uqseg predict` built it by hand before the stage layer (CPU run)."""
    from uqseg_cli.io.cases import discover_cases, split_paths
    from uqseg_cli.io.fingerprint import input_identity
    from uqseg_cli.models.checkpoint import checkpoint_fingerprint, read_checkpoint

    paths = paths or [ck]
    meta0, _ = read_checkpoint(ck)
    specs = {s.id: s for s in discover_cases(images, masks=masks, raters=raters)}
    config = {
        "checkpoint": os.path.relpath(ck.resolve(), out.resolve().parent),
        "checkpoint_fingerprint": checkpoint_fingerprint(ck),
        "arch": meta0.arch,
        "class_names": list(meta0.class_names),
        "prob_dtype": prob_dtype,
        "out_of_fold": len(paths) > 1,
        "amp": False,
        "batch_size": int(batch_size),
        "nan_policy": nan_policy,
        **input_identity(list(specs.values()), images, out, masks, split_paths(raters)),
    }
    if len(paths) > 1:
        config["checkpoints"] = [os.path.relpath(p.resolve(), out.resolve().parent) for p in paths]
        config["checkpoint_fingerprints"] = [checkpoint_fingerprint(p) for p in paths]
    return json.loads(config_json(config))


def test_python_run_equals_the_command_and_keeps_the_resume_config(tmp_path):
    images, masks = write_disks(tmp_path, 3)
    ck = random_checkpoint(tmp_path / "seg.pt")
    cli, py = tmp_path / "cli.h5", tmp_path / "out" / "py.h5"
    args = ["-i", images, "--masks", masks, "-m", ck, "--raters", f"{masks},{masks}", "--prob-dtype", "float32",
            "--batch-size", "2", "--nan-policy", "zero", "--device", "cpu", "-q"]
    assert run_cli("predict", *args, "-o", cli) == 0

    opts = predict.PredictOptions(input=images, masks=masks, checkpoint=ck, raters=[f"{masks},{masks}"],
                                  output=py, prob_dtype="float32", batch_size=2, nan_policy="zero", device="cpu")
    result = predict.run(opts, Report(quiet=True))
    assert sorted(result.done) == ["c00", "c01", "c02"] and not result.failed
    assert result.summary["stage"] == "predict" and result.summary["dice"]["n"] == 3
    with h5py.File(cli) as a, h5py.File(py) as b:
        for cid in ("c00", "c01", "c02"):
            ga, gb = a[f"cases/{cid}"], b[f"cases/{cid}"]
            assert sorted(ga) == sorted(gb) == ["image", "probabilities", "raters", "reference", "segmentation"]
            for name in ga:
                assert np.array_equal(ga[name][()], gb[name][()]) and ga[name].dtype == gb[name].dtype
            assert sorted(ga.attrs) == sorted(gb.attrs)
            for k in ("dice", "member", "train_case", "spacing", "affine", "source"):
                assert np.array_equal(ga.attrs[k], gb.attrs[k]), k
    # the config is the one the command built by hand before (so files written then still resume)
    with StageFile(cli) as sa, StageFile(py) as sb:
        assert sa.config == _old_config(images, cli, ck, masks, [f"{masks},{masks}"], prob_dtype="float32",
                                        batch_size=2, nan_policy="zero")
        assert sb.config == _old_config(images, py, ck, masks, [f"{masks},{masks}"], prob_dtype="float32",
                                        batch_size=2, nan_policy="zero")


def test_fold_checkpoints_config_matches_the_old_one(tmp_path):
    from uqseg_cli.models.checkpoint import resolve_members

    images, masks = write_disks(tmp_path, 4)
    ck = tmp_path / "seg.pt"
    assert run_cli("train", "-i", images, "--masks", masks, "-o", ck, "--epochs", "1", "--folds", "2", "-m",
                   "unet-small", "--input-size", "32x32", "--val-fraction", "0", "--device", "cpu", "-q") == 0
    out = tmp_path / "p.h5"
    result = predict.run(predict.PredictOptions(input=images, checkpoint=ck, output=out, device="cpu"),
                         Report(quiet=True))
    assert len(result.done) == 4
    with StageFile(out) as sf:
        assert sf.config == _old_config(images, out, ck, paths=resolve_members(ck))
        assert sf.config["out_of_fold"] and len(sf.config["checkpoints"]) == 2


def test_options_validate_and_config_fields():
    with pytest.raises(UqsegError, match="--prob-dtype 'int8': expected float16 or float32"):
        predict.PredictOptions(input="x", prob_dtype="int8")
    with pytest.raises(UqsegError, match="--nan-policy 'drop': expected error, zero, min"):
        predict.PredictOptions(input="x", nan_policy="drop")
    with pytest.raises(TypeError):
        predict.PredictOptions()  # the images are required
    opts = predict.PredictOptions(input="x", raters=["a,b", "c"], batch_size=4)
    assert [str(r) for r in opts.raters] == ["a", "b", "c"]
    assert str(opts.output) == "predict.h5" and str(opts.checkpoint) == "seg.pt"
    # the fields that enter the config as given; the rest (checkpoints, amp, out_of_fold, inputs) is resolved
    assert resume_config(opts) == {"prob_dtype": "float16", "nan_policy": "error", "batch_size": 4}


def test_class_argmax_ties_go_to_the_lower_class():
    p = np.array([[[0.5, 0.2]], [[0.5, 0.8]]], dtype=np.float32)
    assert predict.class_argmax(p).tolist() == [[0, 1]] and predict.class_argmax(p).dtype == np.uint8
