"""`uqseg explain` end to end on tiny synthetic stage files and a random tiny quality model."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.explain.synth import write_bins, write_quality_model, write_scores, write_uncertainty
from tests.explain.test_plots import assert_png_ok
from uqseg_cli.cli.app import app, main
from uqseg_cli.errors import UqsegError
from uqseg_cli.explain.gradcam import combined_cam, resize_map
from uqseg_cli.explain.report import missing_references, referenced_files
from uqseg_cli.io.store import StageFile
from uqseg_cli.quality.checkpoint import load_quality_model
from uqseg_cli.quality.inputs import build_inputs

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("explain")
    truth = write_uncertainty(d / "uncertainty.h5", n=6)
    write_quality_model(d / "quality.pt")
    write_scores(d / "scores.csv", truth)
    write_bins(d / "metrics.bins.csv")
    rows = []  # `uqseg aggregate`'s long format
    for i, cid in enumerate(sorted(truth)):
        for region in ("image", "foreground", "band"):
            rows.append({"case": cid, "method": "tta", "measure": "entropy", "region": region,
                         "value": 0.1 * i + (region == "image") + np.sin(i) * (region == "band")})
    pd.DataFrame(rows).to_csv(d / "features.csv", index=False)
    return d, truth


def _model_outputs(folder, ids):
    model, meta = load_quality_model(folder / "quality.pt")
    with StageFile(folder / "uncertainty.h5") as sf, torch.no_grad():
        return {c: float(model(build_inputs(sf.case(c), meta)[None])[0]) for c in ids}


def test_full_run_from_scores(folder):
    d, truth = folder
    out = d / "explain"
    args = ["explain", "-i", str(d / "scores.csv"), "--model", str(d / "quality.pt"), "-o", str(out),
            "--features", str(d / "features.csv"), "--pdf", "--uncertainty-cases", "1", "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    ids = sorted(truth)
    # Grad-CAM: every case, maps on each case's grid, the model's own output recorded
    with h5py.File(out / "gradcam-high.h5", "r") as f:
        assert f.attrs["stage"] == "explain"
        assert sorted(f["cases"]) == ids
        outputs = _model_outputs(d, ids)
        for c in ids:
            cam = f[f"cases/{c}/gradcam"][()]
            assert cam.shape == (40, 48) and cam.dtype == np.float32 and cam.min() >= 0
            assert f[f"cases/{c}"].attrs["predicted"] == pytest.approx(outputs[c], rel=1e-5)
        # the batched run equals Grad-CAM of each case alone, resized to the case's grid
        model, meta = load_quality_model(d / "quality.pt")
        with StageFile(d / "uncertainty.h5") as sf:
            for c in (ids[0], ids[-1]):
                alone = combined_cam(model, build_inputs(sf.case(c), meta)[None]).cam
                ref = resize_map(alone, (40, 48))[0].numpy()
                np.testing.assert_allclose(f[f"cases/{c}/gradcam"][()], ref, rtol=1e-4, atol=1e-6 * ref.max())
    # UMAP table: one row per case, documented columns, values from scores.csv
    u = pd.read_csv(out / "umap.csv")
    assert list(u.columns) == ["case", "x", "y", "predicted_dice", "true_dice", "method", "measure"]
    assert list(u["case"]) == ids
    scores = pd.read_csv(d / "scores.csv")
    scores = scores[scores["framework"] == "img-seg-unc"].set_index("case")  # the model's framework is preferred
    np.testing.assert_allclose(u["predicted_dice"], scores.loc[ids, "predicted_dice"])
    np.testing.assert_allclose(u["true_dice"], [truth[c] for c in ids])
    assert set(u["method"]) == {"tta"} and set(u["measure"]) == {"entropy"}
    uf = pd.read_csv(out / "umap_features.csv")
    assert list(uf["case"]) == ids
    # every figure decodes and is not blank; PDFs too
    pngs = sorted(out.rglob("*.png"))
    names = {p.relative_to(out).as_posix() for p in pngs}
    assert {"umap.png", "umap_features.png", "pred_vs_true.png", "reliability-tta.png"} <= names
    assert len([n for n in names if n.startswith("gradcam-high/")]) == 6
    assert len([n for n in names if n.startswith("uncertainty/")]) == 1
    for p in pngs:
        assert_png_ok(p)
        assert p.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    # the report links only existing files, and links all figures
    report = out / "report.html"
    assert missing_references(report) == []
    refs = set(referenced_files(report.read_text()))
    assert names <= refs and "umap.csv" in refs and "gradcam-high.h5" in refs
    # a finished folder is not overwritten silently
    res2 = runner.invoke(app, args)
    assert res2.exit_code != 0 and isinstance(res2.exception, UqsegError)
    assert "--overwrite" in str(res2.exception)


def test_worst_low_direction_from_h5_and_umap_determinism(folder):
    d, truth = folder
    out = d / "low"
    args = ["explain", "-i", str(d / "uncertainty.h5"), "--model", str(d / "quality.pt"), "-o", str(out),
            "--worst", "2", "--direction", "low", "--uncertainty-cases", "0", "--seed", "3", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    outputs = _model_outputs(d, sorted(truth))
    worst2 = sorted(sorted(outputs, key=lambda c: (outputs[c], c))[:2])
    with h5py.File(out / "gradcam-low.h5", "r") as f:
        assert sorted(f["cases"]) == worst2
        assert all(f[f"cases/{c}"].attrs["direction"] == "low" for c in worst2)
    assert sorted(p.stem for p in (out / "gradcam-low").glob("*.png")) == worst2
    u1 = (out / "umap.csv").read_bytes()
    u = pd.read_csv(out / "umap.csv")
    # without scores.csv the predictions are the model's, the truth is computed from the reference
    np.testing.assert_allclose(u["predicted_dice"], [outputs[c] for c in sorted(truth)], rtol=1e-6)
    np.testing.assert_allclose(u["true_dice"], [truth[c] for c in sorted(truth)], rtol=1e-12)
    res = runner.invoke(app, [*args, "--overwrite", "--no-gradcam"])
    assert res.exit_code == 0, res.output
    assert (out / "umap.csv").read_bytes() == u1  # same seed, same coordinates
    assert not list((out / "gradcam-low").glob("*.png"))  # --overwrite cleared the old figures
    assert missing_references(out / "report.html") == []


def test_3d_montage(tmp_path):
    truth = write_uncertainty(tmp_path / "uncertainty.h5", n=3, shape=(10, 20, 24))
    write_quality_model(tmp_path / "quality.pt", dims=3, size=16)
    out = tmp_path / "explain"
    res = runner.invoke(app, ["explain", "-i", str(tmp_path / "uncertainty.h5"), "--model",
                              str(tmp_path / "quality.pt"), "-o", str(out), "--slices", "4", "--best", "1", "-q"])
    assert res.exit_code == 0, res.output
    with h5py.File(out / "gradcam-high.h5", "r") as f:
        (cid,) = list(f["cases"])
        assert cid in truth and f[f"cases/{cid}/gradcam"].shape == (10, 20, 24)
    for p in out.rglob("*.png"):
        assert_png_ok(p)
    assert len(list(out.glob("uncertainty/*.png"))) == 3
    assert missing_references(out / "report.html") == []


def test_without_model_plots_and_feature_umap(folder):
    d, truth = folder
    out = d / "nomodel"
    # move away from the default quality.pt beside the input: copy scores to a folder without one
    sub = d / "scores_only"
    sub.mkdir()
    (sub / "scores.csv").write_bytes((d / "scores.csv").read_bytes())
    args = ["explain", "-i", str(sub / "scores.csv"), "-o", str(out), "--features", str(d / "features.csv"), "-q"]
    res = runner.invoke(app, args)
    assert isinstance(res.exception, UqsegError) and "--framework" in str(res.exception)  # 2 frameworks, no model
    res = runner.invoke(app, [*args, "--framework", "features"])
    assert res.exit_code == 0, res.output
    assert (out / "umap_features.csv").exists() and not (out / "umap.csv").exists()
    assert (out / "pred_vs_true.png").exists() and not list(out.glob("gradcam*"))
    assert missing_references(out / "report.html") == []


def test_errors_are_one_line(folder, tmp_path, monkeypatch, capsys):
    d, _ = folder
    argv = ["uqseg", "explain", "-i", str(d / "scores.csv"), "--model", str(tmp_path / "nope.pt"), "-o",
            str(tmp_path / "x")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nope.pt" in lines[0] and "not found" in lines[0]
    res = runner.invoke(app, ["explain", "-i", str(d / "scores.csv"), "--direction", "up", "-o", str(tmp_path / "y")])
    assert res.exit_code == 2 and "--direction" in res.output and "'high'" in res.output  # a choice (Literal)
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    res = runner.invoke(app, ["explain", "-i", str(bad), "-o", str(tmp_path / "z")])
    assert isinstance(res.exception, UqsegError) and "bad.csv" in str(res.exception)
