"""`uqseg aggregate` end to end on a synthetic predict → samples → uncertainty chain (in-process, real exit codes)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.metrics.regression import pearson, spearman
from uqseg_cli.metrics.surface import hd95
from uqseg_cli.quality.regions import RegionParams, boundary_band, region_scores, volume_ml


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `uqseg ARGS` through the console entry point; returns (exit code, stdout, stderr)."""
    return run_captured(capsys, *args)


@pytest.fixture
def chain(tmp_path, monkeypatch):
    cases = write_chain(tmp_path, n=10, no_ref=("case09",))
    monkeypatch.chdir(tmp_path)
    return tmp_path, cases


def test_defaults_long_table_values(chain, monkeypatch, capsys):
    folder, cases = chain
    code, _, err = run(monkeypatch, capsys, "aggregate", "--band-width", "2", "--patch-size", "8")
    assert code == 0, err
    df = pd.read_csv(folder / "features.csv")
    assert list(df.columns) == ["case", "method", "measure", "region", "value"]
    c = cases["case03"]
    got = df[(df.case == "case03") & (df.method == "tta")]
    val = {(m, r): v for m, r, v in zip(got.measure, got.region, got.value, strict=True)}
    exp = region_scores(c["maps"]["entropy"], c["segmentation"], RegionParams(band_width=2, patch_size=8))
    for region, v in exp.items():
        assert val[("entropy", region)] == pytest.approx(v, rel=1e-12)
    band = boundary_band(c["segmentation"] > 0, 2)
    assert val[("entropy", "band")] == pytest.approx(c["maps"]["entropy"][band].astype(float).mean(), rel=1e-9)
    assert val[("confidence", "image")] == pytest.approx(1 - c["maps"]["confidence"].astype(float).mean(), rel=1e-9)
    assert val[("volume", "predicted_ml")] == pytest.approx(volume_ml(c["segmentation"], (0.5, 0.5)))
    fgv = c["volumes"][:, 1]
    assert val[("volume", "sample_std_ml")] == pytest.approx(np.std(fgv, ddof=1))
    assert ("combined", "foreground") in val
    # 10 cases x (5 measures x 5 regions + 3 volume + 1 combined)
    assert len(df) == 10 * 29
    stats = json.loads((folder / "features.stats.json").read_text())
    assert stats["weighting"] == "equal" and len(stats["features"]) == 5


def test_reference_stats_reused_on_a_new_batch(chain, monkeypatch, capsys, tmp_path_factory):
    folder, _ = chain
    assert run(monkeypatch, capsys, "aggregate", "--combine", "entropy,mutual_information")[0] == 0
    new = tmp_path_factory.mktemp("new")
    write_chain(new, n=4, seed=7, prefix="new")
    code, out, err = run(
        monkeypatch, capsys, "aggregate", "-i", str(new / "uncertainty.h5"), "-o", "-",
        "--reference", "features.stats.json", "-q",
    )
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    st = json.loads((folder / "features.stats.json").read_text())["methods"]["tta"]
    for case in df.case.unique():
        sub = df[(df.case == case)].set_index(["measure", "region"])["value"]
        x = np.array([sub[("entropy", "foreground")], sub[("mutual_information", "foreground")]])
        expected = float(np.dot((x - st["mean"]) / np.array(st["std"]), st["weights"]))
        assert sub[("combined", "foreground")] == pytest.approx(expected, abs=1e-12)


def test_wide_and_correlate(chain, monkeypatch, capsys):
    folder, cases = chain
    code, out, err = run(monkeypatch, capsys, "aggregate", "--wide", "-o", "-", "--correlate", "corr.csv",
                         "--measure", "entropy", "--stats-out", "s.json")
    assert code == 0, err
    wide = pd.read_csv(io.StringIO(out))
    assert wide.shape[0] == 10 and "tta.entropy.foreground" in wide.columns and "tta.combined.foreground" in wide
    corr = pd.read_csv(folder / "corr.csv")
    assert set(corr.metric) == {"dice", "iou", "hd95"}
    assert (corr.n == 9).all()  # case09 has no reference
    ids = [f"case{i:02d}" for i in range(9)]
    dice = []
    hd = []
    for cid in ids:
        s, r = cases[cid]["segmentation"], cases[cid]["reference"]
        dice.append(2 * (s & r).sum() / (s.sum() + r.sum()))
        hd.append(hd95(s, r, (0.5, 0.5)))
    feat = wide.set_index("case").loc[ids, "tta.entropy.band"].to_numpy()
    row = corr[(corr.measure == "entropy") & (corr.region == "band") & (corr.metric == "dice")].iloc[0]
    assert row.pearson == pytest.approx(pearson(feat, dice), abs=1e-12)
    row = corr[(corr.measure == "entropy") & (corr.region == "band") & (corr.metric == "hd95")].iloc[0]
    assert row.spearman == pytest.approx(spearman(feat, hd), abs=1e-12)
    d = corr[corr.metric == "dice"].spearman.abs().to_numpy()
    assert all(d[i] >= d[i + 1] or math.isnan(d[i + 1]) for i in range(len(d) - 1))


def test_learned_weights(chain, monkeypatch, capsys):
    folder, _ = chain
    code, _, err = run(monkeypatch, capsys, "aggregate", "--weights", "learned", "--combine", "entropy,epkl",
                       "--combine-region", "band")
    assert code == 0, err
    st = json.loads((folder / "features.stats.json").read_text())
    assert st["weighting"] == "learned" and st["features"] == ["entropy/band", "epkl/band"]
    assert st["n_cases"]["tta"] == 10


def test_errors_are_one_line(chain, monkeypatch, capsys, tmp_path_factory):
    folder, _ = chain
    code, _, err = run(monkeypatch, capsys, "aggregate", "--method", "ensemble")
    assert code == 2 and "--method ensemble: not in uncertainty.h5 (it has tta)" in err
    assert "Traceback" not in err
    assert run(monkeypatch, capsys, "aggregate")[0] == 0
    code, _, err = run(monkeypatch, capsys, "aggregate")
    assert code == 2 and "features.csv: exists; pass --overwrite" in err
    empty = tmp_path_factory.mktemp("empty")
    code, _, err = run(monkeypatch, capsys, "aggregate", "-i", str(empty / "uncertainty.h5"))
    assert code == 2 and "uncertainty file not found" in err
    code, _, err = run(monkeypatch, capsys, "aggregate", "-i", "predict.h5", "-o", "x.csv")
    assert code == 2 and "is a 'predict' file, expected uncertainty" in err


def test_broken_case_fails_alone(chain, monkeypatch, capsys):
    import h5py

    folder, _ = chain
    with h5py.File(folder / "uncertainty.h5", "a") as f:
        del f["cases/case04/tta/entropy"]
    code, _, err = run(monkeypatch, capsys, "aggregate", "--measure", "entropy", "--combine", "none")
    assert code == 1
    assert "case04" in err and "entropy" in err
    df = pd.read_csv(folder / "features.csv")
    assert "case04" not in set(df.case) and df.case.nunique() == 9
