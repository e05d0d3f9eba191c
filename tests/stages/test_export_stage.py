"""``stages.export`` runs from Python without the CLI and writes what the command writes (NIfTI on the source
affine, PNG overlays for 2D cases); its options are checked with the command's messages."""

from __future__ import annotations

import fnmatch
import json
import re

import h5py
import nibabel as nib
import numpy as np
import pytest

from tests.helpers import run_captured
from tests.quality.synth import write_chain
from uqseg_cli.errors import UqsegError
from uqseg_cli.stages import export
from uqseg_cli.stages.base import Report


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """predict.h5 → samples.h5 (+ running sums) → uncertainty.h5 of three 2D cases; case00 and case01 have a
    recorded affine, case02 is as an older file left it."""
    monkeypatch.chdir(tmp_path)
    cases = write_chain(tmp_path, n=3, shape=(16, 20))
    affine = np.array([[0.0, 0.5, 0, 3.0], [0.5, 0.0, 0, -2.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    with h5py.File("predict.h5", "r+") as f:
        for cid in ("case00", "case01"):
            f[f"cases/{cid}"].attrs["affine"] = affine
    with h5py.File("samples.h5", "r+") as f:
        for cid, c in cases.items():
            p1 = c["segmentation"].astype(np.float32) * 0.75 + 0.125
            f[f"cases/{cid}/tta"].create_dataset("sum_p", data=4 * np.stack([1 - p1, p1]))
    return tmp_path, cases, affine


def _tree(folder) -> dict[str, object]:
    """Every file under ``folder``: NIfTI as (data, affine), PNG as bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name.endswith(".nii.gz"):
            img = nib.load(str(p))
            out[str(p.relative_to(folder))] = (np.asanyarray(img.dataobj), img.affine)
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_python_run_equals_the_command(chain, capsys):
    tmp, cases, affine = chain
    code, out, err = run_captured(capsys, "export", "-o", "cli", "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    result = export.run(export.ExportOptions(output=tmp / "py"), Report(quiet=True))
    assert sorted(result.done) == sorted(cases) and not result.failed
    assert doc == {"input": "uncertainty.h5", "output": "cli", "cases": 3, "files": doc["files"]}
    assert result.summary["input"] == "uncertainty.h5" and result.summary["cases"] == 3
    a, b = _tree(tmp / "cli"), _tree(tmp / "py")
    assert sorted(a) == sorted(b) and len(a) == len(doc["files"]) == len(result.summary["files"])
    assert all(_same(a[k], b[k]) for k in a)
    # the maps are the file's own and the segmentation, on the recorded affine (or the spacing affine)
    data, aff = a["case00/tta_entropy.nii.gz"]
    np.testing.assert_array_equal(data, cases["case00"]["maps"]["entropy"].T)
    np.testing.assert_allclose(aff, affine)
    np.testing.assert_allclose(a["case02/segmentation.nii.gz"][1], np.diag([0.5, 0.5, 1, 1]))
    assert "case00/tta_mean_segmentation.png" in a and "case00/segmentation.png" in a


def test_layout_declares_every_file(chain):
    tmp, _, _ = chain
    result = export.run(export.ExportOptions(input="predict.h5", output=tmp / "out", format="both"), Report(True))
    patterns = [re.sub(r"<[a-z]+>", "*", p) for p in export.LAYOUT]
    files = [str(p.relative_to(tmp / "out")) for p in (tmp / "out").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files), files
    assert sorted(map(str, result.summary["files"])) == sorted(str(tmp / "out" / f) for f in files)


def test_mean_probabilities_from_the_running_sums(chain):
    tmp, cases, _ = chain
    opts = export.ExportOptions(input="samples.h5", output=tmp / "m", maps=["tta/mean_probabilities"],
                                cases=["case01"], format="nifti")
    result = export.run(opts, Report(quiet=True))
    assert result.done == ["case01"] and [p.rsplit("/", 2)[-2:] for p in result.summary["files"]] == [
        ["case01", "tta_mean_probabilities.nii.gz"]]
    p1 = cases["case01"]["segmentation"].astype(np.float32) * 0.75 + 0.125
    got = nib.load(str(tmp / "m" / "case01" / "tta_mean_probabilities.nii.gz")).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(got[:, :, 0, 1], p1.T, rtol=1e-6)


def test_options_and_refusals_keep_the_command_messages(chain, capsys):
    tmp, _, _ = chain
    with pytest.raises(UqsegError, match=r"--format 'jpeg': choose from auto, nifti, png, both"):
        export.ExportOptions(format="jpeg")
    code, _, err = run_captured(capsys, "export", "--format", "jpeg")
    assert code == 2 and "jpeg" in err  # typer lists the choices
    refusals = {
        "missing.h5: input not found": dict(input="missing.h5"),
        "no complete case(s) nope": dict(cases=["nope"]),
        "case case00 has no map 'tta/nope' (available: segmentation, tta/confidence": dict(maps=["tta/nope"]),
    }
    for message, kw in refusals.items():
        with pytest.raises(UqsegError, match=re.escape(message)):
            export.run(export.ExportOptions(output=tmp / "x", **kw), Report(quiet=True))
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    with pytest.raises(UqsegError, match=r"full: exists and is not empty \(pass --overwrite"):
        export.run(export.ExportOptions(output=tmp / "full"), Report(quiet=True))
    assert export.run(export.ExportOptions(output=tmp / "full", overwrite=True, cases=["case00"]), Report(True)).done


def test_no_input_and_old_files_warn(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UqsegError, match="no -i given and neither uncertainty.h5 nor predict.h5"):
        export.run(export.ExportOptions(), Report(quiet=True))
    write_chain(tmp_path, n=2, shape=(8, 8))
    (tmp_path / "uncertainty.h5").unlink()
    result = export.run(export.ExportOptions(maps=["segmentation"], format="nifti"), Report(quiet=True))
    assert result.summary["input"] == "predict.h5" and len(result.summary["files"]) == 2
    assert "2 case(s) have no recorded affine" in capsys.readouterr().err
