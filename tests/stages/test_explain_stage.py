"""``stages.explain`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from tests.explain.synth import write_bins, write_quality_model, write_scores, write_uncertainty
from tests.helpers import run_cli
from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.pipeline import file_sha256
from uqseg_cli.stages import explain
from uqseg_cli.stages.base import Report, resume_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("explain_stage")
    truth = write_uncertainty(d / "uncertainty.h5", n=5)
    write_quality_model(d / "quality.pt")
    write_scores(d / "scores.csv", truth)
    write_bins(d / "metrics.bins.csv")
    return d


def test_python_run_equals_the_command(folder, monkeypatch):
    d = folder
    monkeypatch.chdir(d)  # defaults: ./scores.csv, quality.pt and uncertainty.h5 beside it, metrics.bins.csv
    args = ["--worst", "2", "--direction", "low", "--cam", "hirescam", "--slices", "4", "--batch-size", "3",
            "--uncertainty-cases", "1", "--device", "cpu", "-q"]
    assert run_cli("explain", "-o", "cli", *args) == 0
    opts = explain.ExplainOptions(output="py", worst=2, direction="low", cam="hirescam", slices=4, batch_size=3,
                                  uncertainty_cases=1, device="cpu")
    result = explain.run(opts, Report(quiet=True))
    assert not result.failed and not result.interrupted
    assert result.out == d / "py" or result.out.resolve() == (d / "py").resolve()
    assert (d / "py" / "report.html").exists() and str(d / "py" / "report.html").endswith(result.summary["report"])
    assert set(result.summary) >= {"gradcam", "regression", "headline", "cases", "report", "files"}
    with h5py.File(d / "cli" / "hirescam-low.h5") as a, h5py.File(d / "py" / "hirescam-low.h5") as b:
        assert a.attrs["config"] == b.attrs["config"]
        assert sorted(a["cases"]) == sorted(b["cases"]) and len(a["cases"]) == 2
        for cid in a["cases"]:
            assert np.array_equal(a[f"cases/{cid}/gradcam"][()], b[f"cases/{cid}/gradcam"][()])
        config = json.loads(b.attrs["config"])
    for name in ("umap.csv",):
        assert (d / "cli" / name).read_bytes() == (d / "py" / name).read_bytes()
    rel = {p.relative_to(d / "cli").as_posix() for p in (d / "cli").rglob("*.png")}
    assert rel == {p.relative_to(d / "py").as_posix() for p in (d / "py").rglob("*.png")}
    # the resume config of the Grad-CAM file: the keys and values the command always stored (files written before
    # this stage layer still resume)
    assert config == {
        "model_sha256": file_sha256(d / "quality.pt"),
        "layer": result.summary["gradcam"]["layer"],
        "direction": "low",
        "cam": "hirescam",
        "slices": 4,
        "formats": ["png"],
        "batch_size": 3,
    }
    assert "+" in config["layer"]  # the default: three stages combined


def test_options_validate_and_config_is_derived_from_fields():
    for bad, match in (({"direction": "up"}, "--direction 'up'"), ({"cam": "x"}, "--cam 'x'"),
                       ({"color_by": "z"}, "--color-by 'z'")):
        with pytest.raises(UqsegError, match=match):
            explain.ExplainOptions(**bad)
    opts = explain.ExplainOptions(formats=["png", "pdf"], seed=3, worst=2, n_neighbors=5, layer="backbone.layer3")
    # the Grad-CAM file's config: every field that changes its maps or figures, then the resolved values; the
    # UMAP/plot options (seed, neighbours, ...) and the case selection are not in it
    assert resume_config(opts, model_sha256="abc", layer="backbone.layer3") == {
        "direction": "high",
        "cam": "gradcam",
        "slices": 9,
        "formats": ["png", "pdf"],
        "batch_size": 8,
        "model_sha256": "abc",
        "layer": "backbone.layer3",
    }


def test_inputs_are_found_or_refused(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UqsegError, match="neither scores.csv nor uncertainty.h5"):
        explain.run(explain.ExplainOptions(), Report(quiet=True))
    with pytest.raises(UqsegError, match="nope.csv: input not found"):
        explain.run(explain.ExplainOptions(input=tmp_path / "nope.csv"), Report(quiet=True))
    with pytest.raises(UqsegError, match="--model .*nope.pt: quality model not found"):
        explain.run(explain.ExplainOptions(input=folder / "scores.csv", model=tmp_path / "nope.pt"), Report(True))
    with pytest.raises(UqsegError, match="--device 'tpu': expected auto, cpu, cuda or cuda:N"):
        explain.run(explain.ExplainOptions(input=folder / "scores.csv", device="tpu"), Report(True))
    (tmp_path / "scores.csv").write_bytes((folder / "scores.csv").read_bytes())
    with pytest.raises(UqsegError, match="--h5 .*none.h5: not found"):
        explain.run(explain.ExplainOptions(input="scores.csv", h5="none.h5", framework="features"), Report(True))
    assert explain.beside(tmp_path / "scores.csv", "quality.pt") is None
    assert explain.beside(folder / "scores.csv", "quality.pt") == folder / "quality.pt"
