"""Bring your own predictions (`uqseg import`, `sample --method files`), nnU-Net raw layout input, and `uqseg
export`, on real files written in nnU-Net / MONAI / TotalSegmentator formats from the shared QUBIQ, LiTS and PH2 data.

Every expected value is computed here independently (nibabel + numpy), never through the code under test.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nibabel.orientations import io_orientation
from PIL import Image

from tests.conftest import shared
from tests.helpers import run_captured
from tests.models.fixtures import random_checkpoint

torch.set_num_threads(1)
RATERS = ("task01_seg01.nii.gz", "task01_seg02.nii.gz", "task01_seg03.nii.gz")
FLOOR = 1e-6


# ------------------------------------------------------------------------------------------------ real data
def qubiq_crops(root: Path, n: int, size: int = 64) -> dict[str, dict]:
    """QUBIQ cases cropped around the kidney (nibabel slicer: the affine gets the crop's origin), written as
    ``root/qubiq/<case>/image.nii.gz`` + raters; returns per case the arrays in NIfTI (x, y) order."""
    src = shared("qubiq_kidney")
    out = {}
    for cdir in sorted(p for p in src.iterdir() if p.is_dir())[:n]:
        img = nib.load(str(cdir / "image.nii.gz"))
        raters = [nib.load(str(cdir / r)) for r in RATERS]
        union = np.any([np.asanyarray(r.dataobj) > 0 for r in raters], axis=0)
        xs, ys = np.nonzero(union)
        x0 = int(np.clip((xs.min() + xs.max()) // 2 - size // 2, 0, union.shape[0] - size))
        y0 = int(np.clip((ys.min() + ys.max()) // 2 - size // 2, 0, union.shape[1] - size))
        sl = (slice(x0, x0 + size), slice(y0, y0 + size))
        dst = root / "qubiq" / cdir.name
        dst.mkdir(parents=True)
        crop = img.slicer[sl]
        nib.save(crop, str(dst / "image.nii.gz"))
        rs = []
        for r, name in zip(raters, RATERS, strict=True):
            rc = r.slicer[sl]
            nib.save(rc, str(dst / name))
            rs.append(np.asanyarray(rc.dataobj).astype(np.uint8))
        out[cdir.name] = {"image": np.asanyarray(crop.dataobj), "raters": rs, "affine": crop.affine,
                          "dir": dst}
    return out


def manifest(path: Path, cases: dict[str, dict], reference: bool = True) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image", *(["mask"] if reference else []), "rater1", "rater2", "rater3"])
        for cid, c in cases.items():
            d = c["dir"]
            w.writerow([cid, d / "image.nii.gz", *([d / RATERS[0]] if reference else []), *(d / r for r in RATERS)])
    return path


def sitk_stuff(affine: np.ndarray, ndim: int) -> dict:
    """What SimpleITK reports for a NIfTI with this (RAS) affine: LPS origin/direction, positive spacing."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :4]
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    direction = lps[:, :3] / zooms
    return {"spacing": tuple(zooms[:ndim]), "origin": tuple(lps[:ndim, 3]),
            "direction": tuple(direction[:ndim, :ndim].ravel())}


def soft_map(raters: list[np.ndarray]) -> np.ndarray:
    """An asymmetric foreground probability (x, y): rater mean, a little blurred, so transposes show."""
    m = np.mean(raters, axis=0).astype(np.float32)
    m = 0.6 * m + 0.2 * np.roll(m, 1, axis=0) + 0.2 * np.roll(m, 2, axis=1)
    return np.clip(m, 0.0, 1.0)


def write_nnunet_2d(folder: Path, cid: str, p_xy: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """nnU-Net v2 2D output of a NIfTI case: (K, 1, y, x) float16 npz, SimpleITKIO .pkl, segmentation .nii.gz."""
    folder.mkdir(parents=True, exist_ok=True)
    p_yx = p_xy.T
    probs = np.stack([1 - p_yx, p_yx])[:, None].astype(np.float16)
    np.savez_compressed(folder / f"{cid}.npz", probabilities=probs)
    props = {"sitk_stuff": sitk_stuff(affine, 2), "spacing": [999.0, 1.0, 1.0],
             "shape_before_cropping": (1, *p_yx.shape), "bbox_used_for_cropping": [[0, 1], [0, 64], [0, 64]]}
    (folder / f"{cid}.pkl").write_bytes(pickle.dumps(props))
    seg_xy = (probs[1, 0] > probs[0, 0]).T.astype(np.uint8)
    nib.save(nib.Nifti1Image(seg_xy, affine), str(folder / f"{cid}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "kidney": 1},
                                                     "file_ending": ".nii.gz"}))
    return seg_xy


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


def entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=0)


# ------------------------------------------------------------------------------------------------ tests
def test_import_nnunet_2d_then_evaluate_and_export(tmp_path, capsys, monkeypatch):
    cases = qubiq_crops(tmp_path, 4)
    pred = tmp_path / "nnunet_out"
    segs = {cid: write_nnunet_2d(pred, cid, soft_map(c["raters"]), c["affine"]) for cid, c in cases.items()}
    man = manifest(tmp_path / "cases.csv", cases)
    out = tmp_path / "predict.h5"
    code, _, err = run_captured(capsys, "import", "-i", man, "--from", pred, "-o", out, "-q")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert f.attrs["stage"] == "predict"
        assert json.loads(f.attrs["config"])["class_names"] == ["background", "kidney"]
        for cid, c in cases.items():
            g = f[f"cases/{cid}"]
            p = soft_map(c["raters"])
            np.testing.assert_array_equal(g["probabilities"][1], p.T.astype(np.float16))  # (y, x) = NIfTI reversed
            np.testing.assert_array_equal(g["segmentation"][()], segs[cid].T)
            np.testing.assert_array_equal(g["raters"][()], np.stack(c["raters"]).transpose(0, 2, 1))
            np.testing.assert_array_equal(g.attrs["affine"], c["affine"])
            assert g.attrs["segmentation_source"] == "file" and "affine_mismatch" not in g.attrs
    # evaluate works on the imported file and its Dice agrees with an independent computation
    metrics = tmp_path / "metrics.csv"
    code, _, err = run_captured(capsys, "evaluate", "-i", out, "-o", metrics, "-q")
    assert code == 0, err
    df = pd.read_csv(metrics)
    for cid, c in cases.items():
        row = df[(df.case == cid) & (df["class"] == "kidney")].iloc[0]
        want = np.mean([dice(segs[cid], r) for r in c["raters"]])
        assert row.dice_rater_mean == pytest.approx(want, abs=1e-9)
    # export: NIfTI on the source affine, voxel for voxel; PNG overlay at image size
    exp = tmp_path / "export"
    code, _, err = run_captured(capsys, "export", "-i", out, "-o", exp, "--map", "segmentation,probabilities", "-q")
    assert code == 0, err
    for cid, c in cases.items():
        src = nib.load(str(c["dir"] / "image.nii.gz"))
        seg = nib.load(str(exp / cid / "segmentation.nii.gz"))
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-6)
        assert seg.shape == src.shape
        np.testing.assert_array_equal(np.asanyarray(seg.dataobj), segs[cid])
        probs = nib.load(str(exp / cid / "probabilities.nii.gz"))
        assert probs.shape == (*src.shape, 1, 2)
        np.testing.assert_array_equal(probs.get_fdata(dtype=np.float32)[:, :, 0, 1],
                                      soft_map(c["raters"]).astype(np.float16).astype(np.float32))
        with Image.open(exp / cid / "segmentation.png") as im:
            assert im.size == (src.shape[0], src.shape[1])  # PNG width = x, height = y
    # an existing export folder is not overwritten silently
    code, _, err = run_captured(capsys, "export", "-i", out, "-o", exp, "-q")
    assert code == 2 and "--overwrite" in err


def test_sample_files_from_three_formats_then_uncertainty_aggregate_score(tmp_path, capsys, monkeypatch):
    cases = qubiq_crops(tmp_path, 14, size=48)
    man = manifest(tmp_path / "cases.csv", cases)
    labels = tmp_path / "labels"  # the import itself: one rater's label maps (TotalSegmentator --ml style)
    folds = [tmp_path / f"fold{k}" for k in range(3)]
    for f in [labels, *folds]:
        f.mkdir()
    expected = {}
    for cid, c in cases.items():
        r1, r2, r3 = c["raters"]
        nib.save(nib.Nifti1Image(r2, c["affine"]), str(labels / f"{cid}.nii.gz"))
        p0 = soft_map([r1, r2, r3])  # fold 0: nnU-Net npz + pkl
        write_nnunet_2d(folds[0], cid, p0, c["affine"])
        p1 = soft_map([r2, r2, r3]).astype(np.float32)  # fold 1: a one-channel NIfTI probability map
        nib.save(nib.Nifti1Image(p1, c["affine"]), str(folds[1] / f"{cid}.nii.gz"))
        Image.fromarray((r3.T * 255).astype(np.uint8)).save(folds[2] / f"{cid}.png")  # fold 2: a 0/255 PNG mask
        samples = []
        f16 = np.stack([(1 - p0).astype(np.float16), p0.astype(np.float16)]).astype(np.float32)
        for p in (f16, np.stack([1 - p1, p1]), np.stack([1 - r3, r3]).astype(np.float32)):
            q = np.maximum(p, FLOOR)
            samples.append((q / q.sum(0)).transpose(0, 2, 1))
        expected[cid] = np.stack(samples)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(capsys, "import", "-i", man, "--from", labels, "-q")
    assert code == 0, err
    code, out, err = run_captured(capsys, "sample", "--method", "files", "--from", ",".join(map(str, folds)), "-q",
                                  "--json")
    assert code == 0, err
    assert json.loads(out)["T"] == {"files": 3} and json.loads(out)["failed"] == {}
    with h5py.File("samples.h5", "r") as f:
        assert json.loads(f.attrs["config"])["T"] == {"files": 3}
        for cid, s in expected.items():
            g = f[f"cases/{cid}/files"]
            assert g.attrs["T"] == 3 and list(g.attrs["formats"]) == ["nnunet-npz", "nifti", "raster"]
            np.testing.assert_allclose(g["sum_p"][()], s.sum(0), atol=2e-6)
            np.testing.assert_allclose(g["sum_entropy"][()], entropy(s).sum(0), atol=2e-5)
            votes = np.stack([(s.argmax(1) == k).sum(0) for k in range(2)])  # agreement counts, as for TTA
            np.testing.assert_array_equal(g["votes"][()], votes)
            seg = cases[cid]["raters"][1].T  # the imported segmentation
            overlap = [[((s[t].argmax(0) == k) & (seg == k)).sum() for k in range(2)] for t in range(3)]
            np.testing.assert_allclose(g["overlap_volumes"][()], np.array(overlap) / 1000.0)  # 1 mm² pixels
    assert run_captured(capsys, "uncertainty", "-q")[0] == 0
    with h5py.File("uncertainty.h5", "r") as f:
        for cid, s in expected.items():
            np.testing.assert_allclose(f[f"cases/{cid}/files/entropy"][()], entropy(s.mean(0)), atol=2e-5)
    code, _, err = run_captured(capsys, "aggregate", "-q")
    assert code == 0, err
    code, _, err = run_captured(capsys, "score", "--method", "files", "--measure", "entropy", "--framework",
                                "features", "--cv", "4", "-q")
    assert code == 0, err
    scores = pd.read_csv("scores.csv")
    assert set(scores.case) == set(cases)
    for cid, c in cases.items():  # reference = rater 1, imported segmentation = rater 2
        assert scores[scores.case == cid].true_dice.iloc[0] == pytest.approx(dice(c["raters"][1], c["raters"][0]))
    # the files method refuses checkpoint options instead of ignoring them
    code, _, err = run_captured(capsys, "sample", "--method", "files", "--from", folds[0], "-T", "5", "-o", "x.h5")
    assert code == 2 and "no -m/-T" in err


def lits_crop(root: Path, size: int = 40) -> tuple[Path, np.ndarray, np.ndarray]:
    """LiTS 117 cropped around the tumour and given an oblique LPS-like affine (flips, anisotropic spacing, shift).
    Returns (image path, labels (x, y, z), affine)."""
    img = nib.load(str(shared("lits117", "img_117.nii.gz")))
    lab = nib.load(str(shared("lits117", "lab_117.nii.gz")))
    data = np.asanyarray(lab.dataobj)
    c = np.argwhere(data == 2).mean(0).astype(int)
    sl = tuple(slice(int(np.clip(v - size // 2, 0, s - size)), int(np.clip(v - size // 2, 0, s - size)) + size)
               for v, s in zip(c, data.shape, strict=True))
    aff = np.array([[-0.8, 0, 0, 120.0], [0, -0.7, 0, 95.5], [0, 0, 2.5, -300.25], [0, 0, 0, 1]])
    root.mkdir(parents=True, exist_ok=True)
    path = root / "liver_117_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[sl].astype(np.float32), aff), str(path))
    labels = data[sl].astype(np.uint8)
    if (root.parent / "labelsTs").is_dir():
        nib.save(nib.Nifti1Image(labels, aff), str(root.parent / "labelsTs" / "liver_117.nii.gz"))
    return path, labels, aff


def test_import_3d_three_orientations_agree_and_export_round_trips(tmp_path, capsys):
    images = tmp_path / "imagesTs"
    (tmp_path / "labelsTs").mkdir()
    path, labels, aff = lits_crop(images)
    assert (labels == 2).any() and (labels == 1).any()
    onehot_xyz = np.stack([labels == k for k in range(3)]).astype(np.float32) * 0.9 + 0.1 / 3  # soft, sums to 1
    # nnU-Net SimpleITKIO: (K, z, y, x), geometry in sitk_stuff
    sitk_dir = tmp_path / "sitk"
    sitk_dir.mkdir()
    np.savez_compressed(sitk_dir / "liver_117.npz", probabilities=onehot_xyz.transpose(0, 3, 2, 1).astype(np.float16))
    (sitk_dir / "liver_117.pkl").write_bytes(pickle.dumps({"sitk_stuff": sitk_stuff(aff, 3), "spacing": [2.5, .7, .8]}))
    # nnU-Net NibabelIOWithReorient: arrays in RAS, then (K, z, y, x); the pkl holds both affines
    ras = nib.Nifti1Image(onehot_xyz.transpose(1, 2, 3, 0), aff).as_reoriented(io_orientation(aff))
    assert not np.allclose(ras.affine, aff)  # the test data really is in another orientation
    reo_dir = tmp_path / "reoriented"
    reo_dir.mkdir()
    probs_ras = np.asanyarray(ras.dataobj).transpose(3, 2, 1, 0)
    np.savez_compressed(reo_dir / "liver_117.npz", probabilities=probs_ras.astype(np.float16))
    props = {"nibabel_stuff": {"original_affine": aff, "reoriented_affine": ras.affine}, "spacing": [2.5, .7, .8]}
    (reo_dir / "liver_117.pkl").write_bytes(pickle.dumps(props))
    # MONAI SaveImage after Orientationd(RAS): (x, y, z, K) NIfTI in RAS
    monai_dir = tmp_path / "monai"
    monai_dir.mkdir()
    nib.save(ras, str(monai_dir / "liver_117.nii.gz"))
    # the same RAS npz without its .pkl cannot be placed: the nnU-Net segmentation next to it (original
    # orientation) disagrees with the argmax, and import says so
    nopkl = tmp_path / "nopkl"
    nopkl.mkdir()
    (nopkl / "liver_117.npz").write_bytes((reo_dir / "liver_117.npz").read_bytes())
    nib.save(nib.Nifti1Image(labels, aff), str(nopkl / "liver_117.nii.gz"))
    code, _, err = run_captured(capsys, "import", "-i", images, "--from", nopkl, "-o", tmp_path / "nopkl.h5", "-q")
    assert code == 0 and "orientation is off" in err
    # TotalSegmentator: a folder per case, one binary mask per structure, here saved in RAS (float 0/1)
    ts_dir = tmp_path / "totalseg" / "liver_117"
    ts_dir.mkdir(parents=True)
    for name, k in (("liver", 1), ("liver_tumor", 2)):
        m = nib.Nifti1Image((labels == k).astype(np.float32), aff).as_reoriented(io_orientation(aff))
        nib.save(m, str(ts_dir / f"{name}.nii.gz"))
    out = tmp_path / "ts.h5"
    code, _, err = run_captured(capsys, "import", "-i", images, "--from", ts_dir.parent, "-o", out, "-q")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["cases/liver_117/segmentation"][()], labels.T)
        np.testing.assert_array_equal(f["cases/liver_117/probabilities"][2], (labels.T == 2).astype(np.float16))
        assert json.loads(f.attrs["config"])["class_names"] == ["background", "liver", "liver_tumor"]
    want = onehot_xyz.astype(np.float16).transpose(0, 3, 2, 1)  # uqseg order (K, z, y, x)
    for src in (sitk_dir, reo_dir, monai_dir):
        out = tmp_path / f"{src.name}.h5"
        code, _, err = run_captured(capsys, "import", "-i", images, "--from", src, "-o", out, "-q")
        assert code == 0, (src, err)
        with h5py.File(out, "r") as f:
            g = f["cases/liver_117"]
            np.testing.assert_array_equal(g["probabilities"][()], want, err_msg=src.name)
            np.testing.assert_array_equal(g["segmentation"][()], labels.T)
            np.testing.assert_array_equal(g["reference"][()], labels.T)  # labelsTs found next to imagesTs
            np.testing.assert_array_equal(g.attrs["affine"], nib.load(str(path)).affine)  # float32 header
            assert "affine_mismatch" not in g.attrs, src.name
            assert g.attrs.get("segmentation_argmax_agreement", 1.0) == 1.0
            assert json.loads(f.attrs["config"])["class_names"] == ["background", "class1", "class2"]
    exp = tmp_path / "export"
    code, _, err = run_captured(capsys, "export", "-i", tmp_path / "sitk.h5", "-o", exp, "-q")
    assert code == 0, err
    seg = nib.load(str(exp / "liver_117" / "segmentation.nii.gz"))
    np.testing.assert_allclose(seg.affine, nib.load(str(path)).affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), labels)
    assert seg.header["sform_code"] == 1 and seg.header["qform_code"] == 1
    probs = nib.load(str(exp / "liver_117" / "probabilities.nii.gz"))
    want_xyzk = onehot_xyz.astype(np.float16).transpose(1, 2, 3, 0)
    np.testing.assert_array_equal(probs.get_fdata(dtype=np.float32), want_xyzk)
    assert not (exp / "liver_117" / "segmentation.png").exists()  # PNG overlays are for 2D cases


def test_export_uncertainty_and_gradcam_like_maps_and_old_files(tmp_path, capsys, monkeypatch):
    """Maps of later stages (uncertainty measures) land on the predict.h5 affine; a file written before the
    affine was kept still exports, with the spacing affine and a warning."""
    cases = qubiq_crops(tmp_path, 2, size=32)
    labels = tmp_path / "labels"
    labels.mkdir()
    for cid, c in cases.items():
        nib.save(nib.Nifti1Image(c["raters"][0], c["affine"]), str(labels / f"{cid}.nii.gz"))
        for k in range(2):
            (tmp_path / f"f{k}").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(soft_map(c["raters"][k:]), c["affine"]), str(tmp_path / f"f{k}" / f"{cid}.nii.gz"))
    monkeypatch.chdir(tmp_path)
    man = manifest(tmp_path / "cases.csv", cases, reference=False)
    assert run_captured(capsys, "import", "-i", man, "--from", labels, "-q")[0] == 0
    assert run_captured(capsys, "sample", "--from", "f0,f1", "-q")[0] == 0  # --from alone means --method files
    assert run_captured(capsys, "uncertainty", "-q")[0] == 0
    code, out, err = run_captured(capsys, "export", "--json", "-q")
    assert code == 0, err
    files = json.loads(out)["files"]
    assert any(f.endswith("files_mutual_information.nii.gz") for f in files)
    with h5py.File("uncertainty.h5", "r") as f:
        for cid, c in cases.items():
            mi = nib.load(str(tmp_path / "export" / cid / "files_mutual_information.nii.gz"))
            np.testing.assert_allclose(mi.affine, c["affine"], atol=1e-6)
            want = f[f"cases/{cid}/files/mutual_information"][()].T
            np.testing.assert_array_equal(mi.get_fdata(dtype=np.float32), want)
    # a Grad-CAM file as explain writes it (stage explain, parent uncertainty.h5, `gradcam` on the case grid)
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.store import write_array

    cams = {cid: np.random.default_rng(i).random((32, 32), dtype=np.float32) for i, cid in enumerate(cases)}
    run_stage(StageRun(stage="explain", out=tmp_path / "explain" / "gradcam-lower.h5", config={},
                       case_ids=sorted(cases), parent=tmp_path / "uncertainty.h5", quiet=True),
              lambda cid, g: write_array(g, "gradcam", cams[cid]))
    code, _, err = run_captured(capsys, "export", "-i", "explain/gradcam-lower.h5", "-o", "cam", "-q")
    assert code == 0, err
    for cid, c in cases.items():
        cam = nib.load(str(tmp_path / "cam" / cid / "gradcam.nii.gz"))
        np.testing.assert_allclose(cam.affine, c["affine"], atol=1e-6)
        np.testing.assert_array_equal(cam.get_fdata(dtype=np.float32), cams[cid].T)
        assert (tmp_path / "cam" / cid / "gradcam.png").is_file()
    with h5py.File("predict.h5", "r+") as f:  # an old file: no affine attribute
        for cid in cases:
            del f[f"cases/{cid}"].attrs["affine"]
    code, _, err = run_captured(capsys, "export", "-i", "predict.h5", "-o", "old", "--map", "segmentation")
    assert code == 0 and "no recorded affine" in err
    old = nib.load(str(tmp_path / "old" / next(iter(cases)) / "segmentation.nii.gz"))
    np.testing.assert_array_equal(old.affine, np.eye(4))  # QUBIQ spacing 1 mm


def test_png_probability_and_label_maps_ph2(tmp_path, capsys):
    ph2 = shared("ph2")
    ids = ["IMD002", "IMD003"]
    (tmp_path / "images").mkdir()
    (tmp_path / "prob").mkdir()
    (tmp_path / "lab").mkdir()
    expect = {}
    for cid in ids:
        (tmp_path / "images" / f"{cid}.jpg").write_bytes((ph2 / "images" / f"{cid}.jpg").read_bytes())
        mask = np.asarray(Image.open(ph2 / "masks" / f"{cid}.png").convert("L")) > 127
        soft = (mask * 200 + np.linspace(0, 40, mask.shape[1])[None, :]).astype(np.uint8)  # 8-bit probability map
        Image.fromarray(soft).save(tmp_path / "prob" / f"{cid}.png")
        Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "lab" / f"{cid}.png")  # labels 0/1
        expect[cid] = (soft.astype(np.float32) / 255, mask)
    out = tmp_path / "p.h5"
    code, _, err = run_captured(capsys, "import", "-i", tmp_path / "images", "--masks", ph2 / "masks", "--from",
                                tmp_path / "prob", "-o", out, "-q")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        for cid, (p, _) in expect.items():
            np.testing.assert_array_equal(f[f"cases/{cid}/probabilities"][1], p.astype(np.float16))
            assert f[f"cases/{cid}"].attrs["prediction_kind"] == "probabilities"
            np.testing.assert_array_equal(f[f"cases/{cid}"].attrs["affine"], np.eye(4))
    # sharded like predict: two parts, merged, give the same file content
    for k in range(2):
        code, _, err = run_captured(capsys, "import", "-i", tmp_path / "images", "--masks", ph2 / "masks", "--from",
                                    tmp_path / "prob", "-o", tmp_path / "s.h5", "--num-parts", 2, "--part-id", k, "-q")
        assert code == 0, err
    assert run_captured(capsys, "merge", "-o", tmp_path / "s.h5", "-q")[0] == 0
    with h5py.File(out, "r") as a, h5py.File(tmp_path / "s.h5", "r") as b:
        for cid in ids:
            np.testing.assert_array_equal(a[f"cases/{cid}/probabilities"][()], b[f"cases/{cid}/probabilities"][()])
    out2 = tmp_path / "l.h5"
    code, _, err = run_captured(capsys, "import", "-i", tmp_path / "images", "--from", tmp_path / "lab", "-o", out2,
                                "-q")
    assert code == 0, err
    with h5py.File(out2, "r") as f:
        for cid, (_, mask) in expect.items():
            np.testing.assert_array_equal(f[f"cases/{cid}/segmentation"][()], mask.astype(np.uint8))
            assert f[f"cases/{cid}"].attrs["prediction_kind"] == "labels"


def test_nnunet_raw_layout_multichannel_predict_and_clear_error(tmp_path, capsys):
    cases = qubiq_crops(tmp_path, 3, size=32)
    ds = tmp_path / "Dataset001_Kidney"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for cid, c in cases.items():
        nib.save(nib.Nifti1Image(c["image"], c["affine"]), str(ds / "imagesTr" / f"{cid}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(-c["image"] + 5.0, c["affine"]), str(ds / "imagesTr" / f"{cid}_0001.nii.gz"))
        nib.save(nib.Nifti1Image(c["raters"][1], c["affine"]), str(ds / "labelsTr" / f"{cid}.nii.gz"))
    two = tmp_path / "two.pt"  # a model trained on both channels of the nnU-Net dataset (labelsTr as masks)
    code, _, err = run_captured(capsys, "train", "-i", ds, "-m", "unet-small", "--epochs", "1", "--input-size", "32",
                                "-o", two, "-q", "--device", "cpu")
    assert code == 0, err
    from uqseg_cli.models.checkpoint import read_checkpoint

    meta, _ = read_checkpoint(two)
    assert meta.preprocessing.channels == 2 and meta.preprocessing.modality == "ct"
    out = tmp_path / "predict.h5"
    code, _, err = run_captured(capsys, "predict", "-i", ds, "-m", two, "-o", out, "-q", "--device", "cpu")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert sorted(f["cases"]) == sorted(cases)
        for cid, c in cases.items():
            g = f[f"cases/{cid}"]
            np.testing.assert_array_equal(g["image"][()], np.stack([c["image"].T, -c["image"].T + 5.0]))
            np.testing.assert_array_equal(g["reference"][()], c["raters"][1].T)  # labelsTr by case id
            np.testing.assert_array_equal(g.attrs["affine"], c["affine"])
    one = random_checkpoint(tmp_path / "one.pt", modality="ct", channels=1)
    code, _, err = run_captured(capsys, "predict", "-i", ds / "imagesTr", "-m", one, "-o", tmp_path / "x.h5", "-q")
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and "2 channels" in lines[0] and "takes 1" in lines[0]


def test_pkl_is_read_without_running_code(tmp_path):
    from uqseg_cli.errors import InputError
    from uqseg_cli.io.geometry import affine_from_sitk
    from uqseg_cli.io.nnunet import read_properties

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"spacing": [1, 1, 1], "x": Evil()}))
    with pytest.raises(InputError, match="only plain data"):
        read_properties(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    good = {"nibabel_stuff": {"original_affine": np.diag([2.0, 3.0, 4.0, 1.0])}, "spacing": [4.0, 3.0, 2.0],
            "shape_before_cropping": (np.int64(5), 6, 7)}
    (tmp_path / "good.pkl").write_bytes(pickle.dumps(good))
    got = read_properties(tmp_path / "good.pkl")
    np.testing.assert_array_equal(got["nibabel_stuff"]["original_affine"], good["nibabel_stuff"]["original_affine"])
    # dataset.json: names by label value; the ignore label is not a class; region-based sets are refused
    from uqseg_cli.io.nnunet import dataset_class_names

    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumor": 2, "liver": 1,
                                                                  "ignore": 3}}))
    assert dataset_class_names(tmp_path) == ["background", "liver", "tumor"]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2], "core": 2}}))
    with pytest.raises(InputError, match="region-based"):
        dataset_class_names(tmp_path)
    # SimpleITK LPS geometry -> NIfTI RAS affine, worked by hand: x and y flip sign, z keeps it
    aff = affine_from_sitk((2.0, 3.0, 4.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_array_equal(aff, [[-2, 0, 0, -10], [0, -3, 0, -20], [0, 0, 4, 30], [0, 0, 0, 1]])


def test_import_rerun_with_other_images_is_refused_and_json_summary(tmp_path, capsys):
    """import records its inputs like predict: another -i into the same output is refused; --json summarises."""
    from tests.helpers import run_captured

    ph2 = shared("ph2")
    ids = sorted(p.stem for p in (ph2 / "images").glob("*.jpg"))[:3]
    imgs, probs = tmp_path / "img", tmp_path / "probs"
    imgs.mkdir()
    probs.mkdir()
    for cid in ids:
        (imgs / f"{cid}.jpg").write_bytes((ph2 / "images" / f"{cid}.jpg").read_bytes())
        (probs / f"{cid}.png").write_bytes((ph2 / "masks" / f"{cid}.png").read_bytes())
    code, out, err = run_captured(capsys, "import", "-i", imgs, "--from", probs, "--kind", "labels", "-o",
                                  tmp_path / "p.h5", "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["cases_done"] == 3 and doc["failed"] == {}
    (imgs / f"{ids[0]}.jpg").unlink()
    code, _, err = run_captured(capsys, "import", "-i", imgs, "--from", probs, "--kind", "labels", "-o",
                                tmp_path / "p.h5", "-q")
    assert code == 2 and "inputs_fingerprint" in err, err
