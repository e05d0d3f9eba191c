"""`uqseg uncertainty`: maps equal the measures of the stored sums; options and lineage."""

from __future__ import annotations

import h5py
import numpy as np
import torch

from tests.bayes.fixtures import make_members, make_predict, run_cli
from uqseg_cli.bayes.maps import maps_by_slab
from uqseg_cli.bayes.measures import MEASURES, SampleSums, uncertainty_maps
from uqseg_cli.io.store import StageFile

torch.set_num_threads(1)


def _pipeline(tmp_path, monkeypatch, *extra):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 2)
    assert run_cli("sample", "-m", "seg.pt", "-T", "5", "--keep-samples", "-q") == 0
    assert run_cli("uncertainty", "-q", *extra) == 0


def test_maps_equal_measures_of_sums_and_of_raw_samples(tmp_path, monkeypatch):
    _pipeline(tmp_path, monkeypatch)
    with StageFile("uncertainty.h5", expect_stage="uncertainty") as uf, h5py.File("samples.h5", "r") as sf:
        assert uf.config["epkl_pairs"] == "all" and uf.config["measures"] == list(MEASURES)
        for cid in ("case00", "case01"):
            for method in ("mcdropout", "ensemble", "tta"):
                g = sf[f"cases/{cid}/{method}"]
                T = int(g.attrs["T"])
                sums = SampleSums.from_numpy(g["sum_p"][()], g["sum_logp"][()], g["sum_entropy"][()], T)
                ref = uncertainty_maps(sums)
                raw = uncertainty_maps(g["samples"][()].astype(np.float64))
                u = uf.h5[f"cases/{cid}/{method}"]
                for m in MEASURES:
                    assert u[m].dtype == np.float32 and u[m].shape == (20, 24)
                    assert np.array_equal(u[m][()], ref[m].numpy().astype(np.float32)), (method, m)
                    np.testing.assert_allclose(u[m][()], raw[m], atol=2e-3, err_msg=f"{method}/{m}")
                assert np.all(u["epkl"][()] >= u["mutual_information"][()])
                assert np.array_equal(u["mean_segmentation"][()], g["sum_p"][()].argmax(0))
        # lineage: predict.h5 arrays are reachable from uncertainty.h5
        assert uf.case("case00").get("segmentation").shape == (20, 24)
        assert uf.case("case00").spacing == (0.8, 0.8)


def test_distinct_pairs_float16_and_subsets(tmp_path, monkeypatch):
    _pipeline(tmp_path, monkeypatch)
    assert run_cli("uncertainty", "-o", "d.h5", "--epkl-pairs", "distinct", "--dtype", "float16",
                   "--method", "tta", "--measure", "epkl,entropy", "-q") == 0
    with h5py.File("d.h5", "r") as d, h5py.File("uncertainty.h5", "r") as a:
        g = d["cases/case00/tta"]
        assert sorted(g) == ["entropy", "epkl", "mean_segmentation"] and list(d["cases/case00"]) == ["tta"]
        assert g["epkl"].dtype == np.float16
        np.testing.assert_allclose(g["epkl"][()], a["cases/case00/tta/epkl"][()] * 5 / 4, rtol=1e-3, atol=1e-4)
    with StageFile("d.h5") as sf:
        assert sf.config["epkl_pairs"] == "distinct" and sf.config["dtype"] == "float16"


def test_bad_options_are_one_line(tmp_path, monkeypatch, capsys):
    _pipeline(tmp_path, monkeypatch)
    for args, msg in [
        (("--measure", "variance"), "--measure variance: unknown"),
        (("--method", "laplace"), "not in samples.h5"),
        (("--epkl-pairs", "some"), "--epkl-pairs"),
        (("--dtype", "int8"), "--dtype"),
        (("-i", "predict.h5"), "expected sample"),
    ]:
        code = run_cli("uncertainty", *args, "-o", "bad.h5")
        err = capsys.readouterr().err
        assert code == 2 and msg in err and "Traceback" not in err, (args, err)


def test_slabs_equal_one_shot() -> None:
    rng = np.random.default_rng(0)
    logp = torch.log_softmax(torch.from_numpy(rng.normal(size=(4, 3, 9, 5, 6))), dim=1)
    s = SampleSums.from_samples(logp, log=True)
    sp, sl, se = (x.numpy().astype(np.float32) for x in (s.sum_p, s.sum_logp, s.sum_entropy))
    one = maps_by_slab(sp, sl, se, 4, slab_voxels=10**9)
    slabs = maps_by_slab(sp, sl, se, 4, slab_voxels=31)  # one slice of 30 voxels per slab
    for m in (*MEASURES, "mean_segmentation"):
        assert np.array_equal(one[m], slabs[m]), m
