"""``stages.sample`` (and ``stages.sample_files``) run from Python without the CLI and write what the command writes;
the resume config is the one the command always stored (files written before still resume)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from tests.bayes.fixtures import CLASSES, make_checkpoint, make_members, make_predict, run_cli
from uqseg_cli.errors import UqsegError
from uqseg_cli.io.store import StageFile
from uqseg_cli.models.checkpoint import checkpoint_fingerprint
from uqseg_cli.stages import sample, sample_files
from uqseg_cli.stages.base import Report, resume_config

torch.set_num_threads(1)
ARRAYS = ("sum_p", "sum_logp", "sum_entropy", "volumes", "soft_volumes", "votes", "overlap_volumes")


def _same_cases(a_path, b_path, methods):
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        assert json_config(a) == json_config(b)
        assert sorted(a["cases"]) == sorted(b["cases"])
        for cid in a["cases"]:
            assert list(a[f"cases/{cid}"].attrs["spacing"]) == list(b[f"cases/{cid}"].attrs["spacing"])
            for m in methods:
                for name in ARRAYS:
                    assert np.array_equal(a[f"cases/{cid}/{m}/{name}"][()], b[f"cases/{cid}/{m}/{name}"][()]), (
                        cid, m, name)


def json_config(f) -> str:
    return f.attrs["config"]


def test_python_run_equals_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 2)
    assert run_cli("sample", "-m", "seg.pt", "-T", "3", "--method", "tta,ensemble", "-q", "-o", "cli.h5") == 0

    opts = sample.SampleOptions(output="py.h5", models=["seg.pt"], T=3, methods=["tta", "ensemble"])
    assert opts.methods == ["ensemble", "tta"]  # canonical order
    result = sample.run(opts, Report(quiet=True))
    assert sorted(result.done) == ["case00", "case01"] and not result.failed
    assert result.summary == {"stage": "sample", "methods": ["ensemble", "tta"], "T": {"ensemble": 2, "tta": 3}}
    _same_cases("cli.h5", "py.h5", ["ensemble", "tta"])


def test_resume_config_is_pinned(tmp_path, monkeypatch):
    """The dict the command stored before the stage layer, key for key (written out by hand on purpose)."""
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=1)
    paths = make_members(tmp_path / "seg.pt", 2)
    opts = sample.SampleOptions(output="s.h5", models=["seg.pt"], T=4, tta_intensity=0.1, keep_samples=True,
                                batch_size=3, seed=7, amp=True, device="cpu")
    sample.run(opts, Report(quiet=True))
    with StageFile("s.h5") as sf:
        assert sf.config == {
            "methods": ["mcdropout", "ensemble", "tta"],
            "T": {"mcdropout": 4, "ensemble": 2, "tta": 4},
            "seed": 7,
            "tta_intensity": 0.1,
            "keep_samples": True,
            "amp": False,  # asked, but on the CPU
            "checkpoint_fingerprints": [checkpoint_fingerprint(p) for p in paths],
            "class_names": CLASSES,
            "batch_size": 3,
            "agreement": 1,
            "mcdropout_mode": "cached",
        }
    # without MC dropout there is no mcdropout_mode; the defaults of the command
    ck = make_checkpoint(tmp_path / "one.pt", dropout=0.0)
    sample.run(sample.SampleOptions(output="t.h5", models=[str(ck)], device="cpu"), Report(quiet=True))
    with StageFile("t.h5") as sf:
        assert sf.config == {
            "methods": ["tta"],
            "T": {"tta": 8},
            "seed": 0,
            "tta_intensity": 0.0,
            "keep_samples": False,
            "amp": False,
            "checkpoint_fingerprints": [checkpoint_fingerprint(ck)],
            "class_names": CLASSES,
            "batch_size": 8,
            "agreement": 1,
        }
    # the option fields that enter it, nothing else (paths, parts, the machine and the unresolved lists do not)
    assert resume_config(opts) == {"tta_intensity": 0.1, "keep_samples": True, "batch_size": 3, "seed": 7}


def test_methods_resolution_skips_only_what_was_not_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=1)
    nodrop = make_checkpoint(tmp_path / "nodrop.pt", dropout=0.0)
    sample.run(sample.SampleOptions(output="a.h5", models=[str(nodrop)], T=2), Report())
    err = capsys.readouterr().err
    assert "ensemble skipped: only one checkpoint" in err and "mcdropout skipped" in err
    with pytest.raises(UqsegError, match="--method ensemble needs at least 2 checkpoints"):
        sample.run(sample.SampleOptions(output="b.h5", models=[str(nodrop)], methods=["ensemble"]), Report(True))
    with pytest.raises(UqsegError, match="--method mcdropout: .*no dropout layer"):
        sample.run(sample.SampleOptions(output="c.h5", models=[str(nodrop)], methods=["mcdropout"]), Report(True))
    with pytest.raises(UqsegError, match="no checkpoint: pass -m"):
        sample.run(sample.SampleOptions(output="d.h5"), Report(True))


def test_options_validate():
    with pytest.raises(UqsegError, match="--method bayes: unknown; choose from mcdropout, ensemble, tta"):
        sample.SampleOptions(methods=["tta", "bayes"])
    with pytest.raises(UqsegError, match="-T must be >= 1"):
        sample.SampleOptions(T=0)
    with pytest.raises(UqsegError, match="--tta-intensity"):
        sample.SampleOptions(tta_intensity=-1)
    for bad in ({"methods": ["files", "tta"]}, {"sources": ["a/"], "models": ["seg.pt"]},
                {"methods": ["files"], "T": 5}):
        with pytest.raises(UqsegError, match="no -m/-T"):
            sample.SampleOptions(**bad)
    assert sample.SampleOptions(sources=["a/"]).files and sample.SampleOptions(methods=["files"]).files
    with pytest.raises(UqsegError, match="needs --from"):
        sample_files.SampleFilesOptions(output="x.h5")


def _write_folds(root, case_ids, k_folds, shape=(20, 24), K=3):
    rng = np.random.default_rng(0)
    folders = []
    for k in range(k_folds):
        d = root / f"fold{k}"
        d.mkdir()
        for cid in case_ids:
            p = rng.dirichlet(np.ones(K), size=shape).transpose(2, 0, 1).astype(np.float32)
            np.savez(d / f"{cid}.npz", probabilities=p)
        folders.append(d)
    return folders


def test_files_stage_equals_the_command_and_pins_its_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    folders = _write_folds(tmp_path, ["case00", "case01"], 3)
    assert run_cli("sample", "--method", "files", "--from", ",".join(f.name for f in folders), "--keep-samples",
                   "-q", "-o", "cli.h5") == 0
    opts = sample.SampleOptions(output="py.h5", sources=[f.name for f in folders], keep_samples=True)
    result = sample.run(opts, Report(quiet=True))  # dispatched to stages/sample_files.py
    assert sorted(result.done) == ["case00", "case01"]
    assert result.summary == {"stage": "sample", "methods": ["files"], "T": {"files": 3}}
    _same_cases("cli.h5", "py.h5", ["files"])
    with h5py.File("py.h5", "r") as f:
        g = f["cases/case00/files"]
        assert g["samples"].shape == (3, 3, 20, 24) and list(g.attrs["formats"]) == ["nnunet-npz"] * 3
    with StageFile("py.h5") as sf:
        assert sf.config == {
            "methods": ["files"],
            "T": {"files": 3},
            "sources": ["fold0", "fold1", "fold2"],  # relative to the output's folder
            "prob_floor": 1e-6,
            "keep_samples": True,
            "class_names": CLASSES,
            "agreement": 1,
        }
    # straight from Python too
    direct = sample_files.run(sample_files.SampleFilesOptions(output="direct.h5", sources=[str(f) for f in folders],
                                                              keep_samples=True), Report(quiet=True))
    assert sorted(direct.done) == ["case00", "case01"]
    _same_cases("py.h5", "direct.h5", ["files"])


def test_a_python_run_applies_its_threads(tmp_path, monkeypatch):
    """``options.threads`` is applied by the stage itself, not only by the CLI's --threads."""
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=1)
    make_members(tmp_path / "seg.pt", 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sample.run(sample.SampleOptions(output="t.h5", models=["seg.pt"], T=2, methods=["tta"], threads=2),
                   Report(quiet=True))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
