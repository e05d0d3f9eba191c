"""Readers and case discovery on the shared real data and on generated and broken files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared
from uqseg_cli.errors import InputError
from uqseg_cli.io.cases import discover_cases, load_case, split_paths
from uqseg_cli.io.readers import case_id_of, read_image, read_mask


def _nifti(path, data, zooms):
    import nibabel as nib

    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0][:4]) if len(zooms) == 3 else np.eye(4))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def test_ph2_jpeg_and_png_masks():
    d = shared("ph2")
    specs = discover_cases(d / "images", masks=d / "masks")
    assert len(specs) == 150 and [s.id for s in specs] == sorted(s.id for s in specs)
    c = load_case(specs[0])
    assert c.image.dtype == np.uint8 and c.image.shape[0] == 3 and c.image.ndim == 3
    assert c.mask.shape == c.image.shape[1:] and set(np.unique(c.mask)) <= {0, 1}
    assert c.spacing == (1.0, 1.0)
    # PIL as an independent reference for the pixels
    ref = np.asarray(Image.open(specs[0].image)).transpose(2, 0, 1)
    np.testing.assert_array_equal(c.image, ref)
    np.testing.assert_array_equal(c.mask, (np.asarray(Image.open(specs[0].mask)) > 127).astype(np.uint8))


def test_qubiq_nifti_three_raters_case_folders():
    import nibabel as nib

    d = shared("qubiq_kidney")
    specs = discover_cases(d, raters=["task01_seg01.nii.gz", "task01_seg02.nii.gz,task01_seg03.nii.gz"])
    assert len(specs) == 14 and all(len(s.raters) == 3 for s in specs)
    c = load_case(specs[0])
    raw = np.asanyarray(nib.load(str(specs[0].image)).dataobj)
    assert c.image.shape == (1, *raw.squeeze().T.shape) and c.image.dtype == np.float32
    np.testing.assert_array_equal(c.image[0], raw.squeeze().T)
    assert c.raters.shape == (3, *c.image.shape[1:]) and c.raters.dtype == np.uint8
    # raters disagree somewhere (real multi-rater data)
    assert (c.raters.min(0) != c.raters.max(0)).any()


def test_lits_volume_spacing_and_labels():
    d = shared("lits117")
    specs = discover_cases(d / "img_117.nii.gz", masks=d / "lab_117.nii.gz")
    c = load_case(specs[0])
    assert c.image.shape == (1, 128, 128, 128) and c.ndim == 3
    assert len(c.spacing) == 3
    assert set(np.unique(c.mask)) == {0, 1, 2}


def test_generated_formats_grey_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (17, 23), dtype=np.uint8)
    rgb = rng.integers(0, 255, (17, 23, 3), dtype=np.uint8)
    for ext in ("png", "bmp", "tif", "tiff"):
        Image.fromarray(grey).save(tmp_path / f"g_{ext}.{ext}")
        arr, sp = read_image(tmp_path / f"g_{ext}.{ext}")
        np.testing.assert_array_equal(arr, grey[None])
        Image.fromarray(rgb).save(tmp_path / f"c_{ext}.{ext}")
        arr, _ = read_image(tmp_path / f"c_{ext}.{ext}")
        np.testing.assert_array_equal(arr, rgb.transpose(2, 0, 1))
    Image.fromarray(rgb).save(tmp_path / "j.jpeg", quality=95)
    arr, _ = read_image(tmp_path / "j.jpeg")
    np.testing.assert_array_equal(arr, np.asarray(Image.open(tmp_path / "j.jpeg")).transpose(2, 0, 1))


def test_nifti_axis_order_and_spacing(tmp_path):
    vol = np.random.default_rng(1).standard_normal((5, 6, 7)).astype(np.float32)  # (X, Y, Z)
    _nifti(tmp_path / "v.nii.gz", vol, (0.7, 0.8, 2.5))
    arr, sp = read_image(tmp_path / "v.nii.gz")
    assert arr.shape == (1, 7, 6, 5) and sp == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_array_equal(arr[0], vol.transpose(2, 1, 0))
    assert case_id_of(tmp_path / "v.nii.gz") == "v"
    lab = (vol > 0).astype(np.uint8)
    _nifti(tmp_path / "m.nii", lab, (0.7, 0.8, 2.5))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.nii", (7, 6, 5)), lab.transpose(2, 1, 0))


def test_bad_files_give_one_clear_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png", "c1")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.png \\(case c2\\): cannot decode"):
        read_image(tmp_path / "trunc.png", "c2")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type '.txt'"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "fake.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="cannot read NIfTI"):
        read_image(tmp_path / "fake.nii.gz")
    Image.fromarray(np.zeros((31, 30), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="mask shape \\(31, 30\\) differs from image shape \\(30, 30\\)"):
        read_mask(tmp_path / "m.png", (30, 30), "c3")


def test_mask_values(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255
    Image.fromarray(m).save(tmp_path / "b.png")
    assert set(np.unique(read_mask(tmp_path / "b.png", (8, 8)))) == {0, 1}
    m[6, 6] = 2
    m[2:5, 2:5] = 1
    Image.fromarray(m).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", (8, 8)), m)


def test_folder_manifest_and_matching(tmp_path):
    img, msk = tmp_path / "img", tmp_path / "msk"
    img.mkdir()
    msk.mkdir()
    for cid in ("b", "a", "c"):
        Image.fromarray(np.full((6, 5), 100, np.uint8)).save(img / f"{cid}.png")
        Image.fromarray(np.zeros((6, 5), np.uint8)).save(msk / f"{cid}.png")
    specs = discover_cases(img, masks=msk)
    assert [s.id for s in specs] == ["a", "b", "c"] and specs[0].mask == msk / "a.png"
    (msk / "c.png").unlink()
    with pytest.raises(InputError, match="no mask for case\\(s\\) c"):
        discover_cases(img, masks=msk)
    (tmp_path / "m.csv").write_text(
        "case,image,mask,rater1,rater2,split\nz,img/a.png,,msk/a.png,msk/b.png,val\ny,img/b.png,msk/b.png,,,train\n"
    )
    specs = discover_cases(tmp_path / "m.csv")
    assert [s.id for s in specs] == ["y", "z"]
    assert specs[0].mask == tmp_path / "msk/b.png" and specs[1].raters == (
        tmp_path / "msk/a.png",
        tmp_path / "msk/b.png",
    )
    assert specs[1].split == "val"
    c = load_case(specs[1])
    assert c.raters.shape == (2, 6, 5) and c.meta == {"split": "val"}
    (tmp_path / "bad.csv").write_text("id,path\n1,2\n")
    with pytest.raises(InputError, match="needs columns 'case' and 'image'"):
        discover_cases(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("case,image\na,img/a.png\na,img/b.png\n")
    with pytest.raises(InputError, match="duplicate case id"):
        discover_cases(tmp_path / "dup.csv")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(img / "a.jpg")
    with pytest.raises(InputError, match="appears twice"):
        discover_cases(img)
    assert split_paths(["a,b", "c"]) == [p for p in map(__import__("pathlib").Path, "abc")]
