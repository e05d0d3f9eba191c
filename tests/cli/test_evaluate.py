"""`uqseg evaluate` on small predict.h5 / samples.h5 files written here with the spine's store helpers.

`uqseg predict --raters` does not exist yet, so the files are made directly (schema uqseg/1 as in
docs/architecture.md); the QUBIQ test puts the real rater masks (read through the spine's readers) next to a
synthetic probability map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import properscoring as ps
import pytest
from typer.testing import CliRunner

from tests.conftest import shared
from uqseg_cli.cli.app import app
from uqseg_cli.errors import UqsegError
from uqseg_cli.io.store import write_array, write_root
from uqseg_cli.metrics import calibration as cal
from uqseg_cli.metrics.overlap import dice

REPO = Path(__file__).resolve().parents[2]
NAMES = ["background", "liver", "kidney"]


def _synthetic_cases(n=4, shape=(4, 24, 20), seed=0):
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        logits = rng.normal(size=(3, *shape)) * 1.5
        logits[1, :, 3:12, 4:14] += 4 + i
        logits[2, :, 14:21, 6:16] += 3
        p = np.exp(logits - logits.max(0))
        p /= p.sum(0)
        truth = np.argmax(logits + rng.normal(size=logits.shape) * 1.5, axis=0)
        raters = np.stack([np.where(rng.random(shape) < 0.85, truth, 0) for _ in range(3)]).astype(np.uint8)
        image = np.full((1, *shape), -1000.0, np.float32)
        image[0, :, 2:22, 2:19] = 40.0
        cases[f"case{i:02d}"] = {"p": p.astype(np.float32), "raters": raters, "image": image}
    return cases


def write_predict(path: Path, cases: dict, spacing=(2.0, 0.8, 0.8), raters=True, names=NAMES) -> Path:
    ids = sorted(cases)
    with h5py.File(path, "w") as f:
        write_root(f, stage="predict", config={"class_names": names}, parent="", parent_fp="", case_ids=ids,
                   num_parts=1, part_id=0, done_ids=ids)
        for cid in ids:
            c = cases[cid]
            g = f.create_group(f"cases/{cid}")
            write_array(g, "image", c["image"])
            write_array(g, "probabilities", c["p"])
            write_array(g, "segmentation", np.argmax(c["p"], axis=0).astype(np.uint8))
            if raters:
                write_array(g, "raters", c["raters"])
            g.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
            g.attrs["complete"] = True
    return path


def write_samples(path: Path, predict: Path, cases: dict, t=5, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    ids = sorted(cases)
    fp = h5py.File(predict, "r").attrs["fingerprint"]
    truth = {}
    with h5py.File(path, "w") as f:
        write_root(f, stage="sample", config={"methods": ["tta"]}, parent=predict.name, parent_fp=fp, case_ids=ids,
                   num_parts=1, part_id=0, done_ids=ids)
        for cid in ids:
            p = cases[cid]["p"].astype(np.float64)
            samples = np.clip(p[None] + rng.normal(0, 0.05, size=(t, *p.shape)), 1e-4, None)
            samples /= samples.sum(1, keepdims=True)
            g = f.create_group(f"cases/{cid}/tta")
            write_array(g, "sum_p", samples.sum(0).astype(np.float32))
            vols = rng.normal(5.0, 0.3, size=(t, 3))
            write_array(g, "volumes", vols)
            g.attrs["T"] = t
            f[f"cases/{cid}"].attrs["complete"] = True
            truth[cid] = {"mean_p": samples.sum(0).astype(np.float32).astype(np.float64) / t, "volumes": vols}
    return truth


def run(*args: str):
    """In-process run; returns (exit code, stdout, stderr, exception)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr, result.exception


@pytest.fixture
def predict_file(tmp_path):
    cases = _synthetic_cases()
    return write_predict(tmp_path / "predict.h5", cases), cases


def test_evaluate_predict_end_to_end(predict_file, tmp_path):
    path, cases = predict_file
    out = tmp_path / "res" / "metrics.csv"
    code, _, err, exc = run("evaluate", "-i", str(path), "-o", str(out), "--quiet")
    assert code == 0, (err, exc)
    df = pd.read_csv(out)
    assert len(df) == 4 * 3  # 4 cases x (2 foreground classes + "all")
    assert set(df["class"]) == {"liver", "kidney", "all"} and set(df["method"]) == {"deterministic"}
    # an independent recomputation of two numbers
    c = cases["case02"]
    seg = np.argmax(c["p"], axis=0)
    fg = (c["raters"] == 1).all(0)
    dis = (c["raters"] == 1).any(0) & ~fg
    row = df[(df["case"] == "case02") & (df["class"] == "liver")].iloc[0]
    assert row["dice_consensus"] == pytest.approx(dice((seg == 1) & ~dis, fg))
    assert row["volume_pred_ml"] == pytest.approx(c["p"][1].astype(np.float64).sum() * 2.0 * 0.8 * 0.8 / 1000)
    assert np.isnan(row["ece"]) and not np.isnan(row["ece_class"])
    all_row = df[(df["case"] == "case02") & (df["class"] == "all")].iloc[0]
    want = np.mean([cal.toplabel_bin_sums(c["p"], c["raters"][r], 15).ece() for r in range(3)])
    assert all_row["ece"] == pytest.approx(want, abs=1e-9)
    # side files
    bins = pd.read_csv(tmp_path / "res" / "metrics.bins.csv")
    assert list(bins.columns[:4]) == ["method", "case", "rater", "variant"]
    assert bins["bin"].max() == 15 and (bins["count"] >= 0).all()
    summ = pd.read_csv(tmp_path / "res" / "metrics.summary.csv")
    s = summ[(summ["class"] == "liver") & (summ.metric == "dice_consensus")].iloc[0]
    vals = df[df["class"] == "liver"]["dice_consensus"]
    assert s["n"] == 4 and s["mean"] == pytest.approx(vals.mean()) and s["median"] == pytest.approx(vals.median())
    assert s["std"] == pytest.approx(vals.std())
    # refuses to overwrite without --overwrite
    code, _, _, exc = run("evaluate", "-i", str(path), "-o", str(out), "--quiet")
    assert isinstance(exc, UqsegError) and "--overwrite" in str(exc)


def test_stdout_and_json(predict_file, tmp_path):
    path, _ = predict_file
    code, out, _, exc = run("evaluate", "-i", str(path), "-o", "-", "--quiet")
    assert code == 0, exc
    lines = out.strip().splitlines()
    assert lines[0].startswith("case,method,class") and len(lines) == 1 + 12
    code, out, _, exc = run("evaluate", "-i", str(path), "-o", str(tmp_path / "m.csv"), "--json", "--quiet")
    assert code == 0, exc
    doc = json.loads(out)
    assert doc["cases"] == 4 and doc["n_bins"] == 15 and doc["crps"] == ["gaussian"]
    ece = doc["summary"]["deterministic"]["all"]["ece"]
    assert ece["n"] == 4 and 0 <= ece["pooled"] <= 1 and ece["mean"] > 0
    assert "crps_gaussian_ml" in doc["summary"]["deterministic"]["liver"]
    _, _, _, exc = run("evaluate", "-i", str(path), "-o", "-", "--json")
    assert isinstance(exc, UqsegError) and "pick one" in str(exc)


def test_samples_mean_probabilities_and_ensemble_crps(predict_file, tmp_path):
    path, cases = predict_file
    truth = write_samples(tmp_path / "samples.h5", path, cases)
    out = tmp_path / "m.csv"
    code, _, err, exc = run("evaluate", "-i", str(tmp_path / "samples.h5"), "--method", "tta", "--crps",
                            "gaussian,ensemble", "-o", str(out), "--quiet")
    assert code == 0, (err, exc)
    df = pd.read_csv(out)
    assert set(df["method"]) == {"tta"}
    c, t = cases["case01"], truth["case01"]
    row = df[(df["case"] == "case01") & (df["class"] == "kidney")].iloc[0]
    vols = (c["raters"] == 2).reshape(3, -1).sum(1) * 2.0 * 0.8 * 0.8 / 1000
    want = np.mean([ps.crps_ensemble(v, t["volumes"][:, 2]) for v in vols])
    assert row["crps_ensemble_ml"] == pytest.approx(float(want), abs=1e-9)
    assert row["volume_pred_ml"] == pytest.approx(t["mean_p"][2].sum() * 2.0 * 0.8 * 0.8 / 1000, rel=1e-9)
    seg = np.argmax(t["mean_p"], axis=0)  # the method's segmentation is the argmax of its mean prediction
    assert row["volume_seg_ml"] == pytest.approx((seg == 2).sum() * 2.0 * 0.8 * 0.8 / 1000)
    _, _, _, exc = run("evaluate", "-i", str(tmp_path / "samples.h5"), "--method", "mcdropout", "-o", "-")
    assert isinstance(exc, UqsegError) and "it has tta" in str(exc)
    _, _, _, exc = run("evaluate", "-i", str(path), "--crps", "ensemble", "-o", "-")
    assert isinstance(exc, UqsegError) and "samples.h5" in str(exc)


def test_shards_merge_to_the_one_shot_result(predict_file, tmp_path):
    path, _ = predict_file
    whole = tmp_path / "whole" / "metrics.csv"
    assert run("evaluate", "-i", str(path), "-o", str(whole), "-q")[0] == 0
    sharded = tmp_path / "sh" / "metrics.csv"
    for k in (0, 1):
        code, _, _, exc = run("evaluate", "-i", str(path), "-o", str(sharded), "--num-parts", "2", "--part-id",
                              str(k), "-q")
        assert code == 0, exc
    assert (tmp_path / "sh" / "metrics.part1-of-2.bins.csv").exists()
    code, _, _, exc = run("evaluate", "--merge-parts", "-o", str(sharded), "-q")
    assert code == 0, exc
    a, b = pd.read_csv(whole), pd.read_csv(sharded)
    pd.testing.assert_frame_equal(a, b)
    sa = pd.read_csv(tmp_path / "whole" / "metrics.summary.csv")
    sb = pd.read_csv(tmp_path / "sh" / "metrics.summary.csv")
    pd.testing.assert_frame_equal(sa, sb)
    pooled = sa[(sa["class"] == "all") & (sa.metric == "ece")]["pooled"].iloc[0]
    assert pooled > 0 and pooled != pytest.approx(sa[(sa["class"] == "all") & (sa.metric == "ece")]["mean"].iloc[0])
    (tmp_path / "sh" / "metrics.part1-of-2.csv").unlink()
    _, _, _, exc = run("evaluate", "--merge-parts", "-o", str(sharded), "--overwrite", "-q")
    assert isinstance(exc, UqsegError) and "part(s) 1 of 2 missing" in str(exc)


def test_curvas2024_protocol(predict_file, tmp_path):
    path, cases = predict_file
    out = tmp_path / "c.csv"
    code, _, _, exc = run("evaluate", "-i", str(path), "--protocol", "curvas2024", "-o", str(out), "-q")
    assert code == 0, exc
    df = pd.read_csv(out)
    assert "crps_curvas_ml" in df.columns and "crps_gaussian_ml" not in df.columns
    c = cases["case00"]
    crop = (slice(None), slice(None), slice(2, 22), slice(2, 19))
    p = c["p"].astype(np.float64)[crop]
    p = np.concatenate([np.clip(1 - p[1:].sum(0), 0, 1)[None], p[1:]])
    want = np.mean([cal.toplabel_bin_sums(p, c["raters"][crop][r], 50).ece() for r in range(3)])
    assert df[(df["case"] == "case00") & (df["class"] == "all")]["ece"].iloc[0] == pytest.approx(want, abs=1e-9)
    assert pd.read_csv(tmp_path / "c.bins.csv")["bin"].max() == 50
    _, _, _, exc = run("evaluate", "-i", str(path), "--protocol", "curvas2024", "--bins", "15", "-o", "-")
    assert isinstance(exc, UqsegError) and "conflicts" in str(exc)


@pytest.mark.parametrize("protocol", ["uqseg", "curvas2024"])
def test_tiny_slabs_through_the_cli_give_the_same_tables(predict_file, tmp_path, monkeypatch, protocol):
    import functools

    import uqseg_cli.stages.evaluate as stage_eval
    from uqseg_cli.metrics.evaluation import evaluate_case

    path, cases = predict_file
    samples = tmp_path / "samples.h5"
    write_samples(samples, path, cases)
    for src in (path, samples):
        one, many = tmp_path / f"one-{src.stem}.csv", tmp_path / f"many-{src.stem}.csv"
        assert run("evaluate", "-i", str(src), "--protocol", protocol, "-o", str(one), "-q")[0] == 0
        with monkeypatch.context() as m:
            m.setattr(stage_eval, "evaluate_case", functools.partial(evaluate_case, slab_voxels=30))
            assert run("evaluate", "-i", str(src), "--protocol", protocol, "-o", str(many), "-q")[0] == 0
        for suffix in (".csv", ".bins.csv"):
            a = pd.read_csv(one.with_name(one.stem + suffix))
            b = pd.read_csv(many.with_name(many.stem + suffix))
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)


def test_failed_case_is_reported_and_others_written(tmp_path):
    cases = _synthetic_cases(n=3)
    cases["case01"]["raters"][1, 0, 0, 0] = 7  # a label the model does not have
    path = write_predict(tmp_path / "predict.h5", cases)
    code, _, err, _ = run("evaluate", "-i", str(path), "-o", str(tmp_path / "m.csv"), "-q")
    assert code == 1
    assert "case01" in err and "rater 2 has label 7" in err
    assert set(pd.read_csv(tmp_path / "m.csv")["case"]) == {"case00", "case02"}


def test_usage_errors_are_one_line_through_the_real_cli(tmp_path):
    write_predict(tmp_path / "predict.h5", _synthetic_cases(n=1), raters=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "uqseg_cli", "evaluate", "-o", "-"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "predict.h5: no case has rater masks" in r.stderr and r.stderr.strip().count("\n") <= 1


def test_qubiq_real_raters_end_to_end(tmp_path):
    """Real QUBIQ rater masks (spine readers) + a synthetic soft prediction, through the CLI."""
    from uqseg_cli.io.cases import discover_cases, load_case

    root = shared("qubiq_kidney")
    specs = discover_cases(root, raters=[f"task01_seg0{i}.nii.gz" for i in (1, 2, 3)])[:4]
    cases = {}
    for spec in specs:
        case = load_case(spec)
        frac = (case.raters == 1).mean(0, dtype=np.float64)
        p1 = np.clip(frac * 0.8 + 0.1 * (frac > 0), 0, 1)
        cases[case.id] = {"p": np.stack([1 - p1, p1]).astype(np.float32), "raters": case.raters,
                          "image": case.image}
    path = write_predict(tmp_path / "predict.h5", cases, spacing=specs and load_case(specs[0]).spacing,
                         names=["background", "kidney"])
    code, _, err, exc = run("evaluate", "-i", str(path), "-o", str(tmp_path / "q.csv"), "--crps", "gaussian,curvas",
                            "-q")
    assert code == 0, (err, exc)
    df = pd.read_csv(tmp_path / "q.csv")
    k = df[df["class"] == "kidney"]
    assert len(k) == 4
    # data README: all-agree / any-rater 0.77-0.91 per case, i.e. dissensus 0.09-0.23 of the any-rater region
    assert k["dissensus_fraction"].between(0.08, 0.24).all()
    assert (k["volume_rater_std_ml"] > 0).all() and (k["crps_curvas_ml"] >= 0).all()
    assert k["dice_consensus"].between(0.9, 1.0).all()  # the map is built around the raters
