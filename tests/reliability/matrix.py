"""The bad-input matrix: every row is one bad (or formerly mishandled) input and what uqseg must answer.

Shared by the CI test (tests/reliability/test_bad_inputs.py, in-process) and the fault campaign
(tests/reliability/campaign.py, real processes). A row's ``setup`` damages a private copy of the world (see
world.py) in the current folder; the command then runs there. ``code``: the exit code; ``msg``: a regular
expression the message must match; ``never``: text that must not appear (e.g. torch's ``weights_only`` advice).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from PIL import Image

from tests.helpers import run_cli
from tests.models.fixtures import random_checkpoint


@dataclass
class Row:
    id: str
    item: str  # issue 12 item (or "old" for cases handled before)
    args: list[str]
    code: int
    msg: str
    setup: Callable[[Path], None] | None = None
    never: list[str] = field(default_factory=list)
    one_line: bool = True  # usage errors: exactly one line on stderr


# ------------------------------------------------------------------------------------------------ builders
def _png(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path)


def _nifti(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, np.float32).T.copy(), np.diag([0.8, 0.8, 2.0, 1.0])), str(path))


def _ct(d: Path, bad=None, name: str = "v1.nii.gz") -> None:
    """ct/v0.nii.gz (good) and ct/<name> with ``bad`` written at a few voxels; ct.pt a 1-channel CT checkpoint."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 50, (3, 16, 20)).astype(np.float32)
    _nifti(d / "ct" / "v0.nii.gz", vol)
    v = vol.copy()
    if bad is not None:
        v[1, 2:4, 3:5] = bad
    _nifti(d / "ct" / name, v)
    random_checkpoint(d / "ct.pt", modality="ct", channels=1, input_size=(16, 16))


def _float_tiff(d: Path) -> None:
    arr = np.random.default_rng(1).normal(0, 50, (16, 20)).astype(np.float32)
    (d / "tif").mkdir()
    Image.fromarray(arr, mode="F").save(d / "tif" / "t0.tif")
    arr[3, 4] = np.nan
    Image.fromarray(arr, mode="F").save(d / "tif" / "t1.tif")
    random_checkpoint(d / "ct.pt", modality="ct", channels=1, input_size=(16, 16))


def _masks_with(d: Path, values, suffix: str = ".png", case: str = "c01") -> None:
    """masks2/: copies of masks/ with case ``case`` replaced by a mask holding ``values`` (in stripes)."""
    shutil.copytree(d / "masks", d / "masks2")
    m = np.zeros((30, 40), np.uint8)
    for i, v in enumerate(values):
        m[:, i * 40 // len(values): (i + 1) * 40 // len(values)] = v
    (d / "masks2" / f"{case}.png").unlink()
    if suffix in (".jpg", ".jpeg"):
        yy, xx = np.mgrid[:30, :40]
        disk = (((yy - 15) ** 2 + (xx - 20) ** 2) < 64).astype(np.uint8) * 255
        Image.fromarray(disk).save(d / "masks2" / f"{case}{suffix}", quality=60)
    else:
        _png(d / "masks2" / f"{case}{suffix}", m)


def _images2(d: Path) -> None:
    shutil.copytree(d / "images", d / "images2")
    shutil.copy(d / "images" / "c00.png", d / "images2" / "c09.png")


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)

    return f


def _pickled_code(name: str) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        import torch

        torch.save({"format": "uqseg-checkpoint", "hook": print}, d / name)

    return f


def _foreign_h5(d: Path) -> None:
    with h5py.File(d / "other.h5", "w") as f:
        f.create_dataset("data", data=np.zeros(3))
        f.attrs["schema"] = np.int64(3)


def _bad_config_h5(d: Path) -> None:
    shutil.copy(d / "predict.h5", d / "bad.h5")
    with h5py.File(d / "bad.h5", "r+") as f:
        f.attrs["config"] = "{not json"


def _craft(kind: str, src: str = "predict.h5", dst: str = "crafted.h5", case: str = "c01") -> Callable[[Path], None]:
    """A copy of a stage file whose case reads another file: external link, virtual or external dataset."""

    def f(d: Path) -> None:
        (d / "secret.txt").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 40)
        if src != dst:
            shutil.copy(d / src, d / dst)
        with h5py.File(d / dst, "r+") as h:
            if kind == "link":
                del h[f"cases/{case}"]
                h[f"cases/{case}"] = h5py.ExternalLink(str(d / "secret.txt"), "/")
            elif kind == "meta-link":
                h["meta/extra"] = h5py.ExternalLink(str(d / "secret.txt"), "/")
            elif kind == "external":
                g = h[f"cases/{case}"]
                del g["segmentation"]
                g.create_dataset("segmentation", shape=(30, 40), dtype="u1",
                                 external=[(str(d / "secret.txt"), 0, 1200)])
            elif kind == "virtual":
                with h5py.File(d / "victim.h5", "w") as v:
                    v.create_dataset("x", data=np.zeros((30, 40), np.uint8))
                g = h[f"cases/{case}"]
                del g["segmentation"]
                layout = h5py.VirtualLayout(shape=(30, 40), dtype="u1")
                layout[:] = h5py.VirtualSource(str(d / "victim.h5"), "x", shape=(30, 40))
                g.create_virtual_dataset("segmentation", layout)

    return f


def _parts_of_other_inputs(d: Path) -> None:
    _images2(d)
    assert run_cli("predict", "-i", "images", "-o", "pp.h5", "--num-parts", "2", "--part-id", "0", "-q") == 0
    assert run_cli("predict", "-i", "images2", "-o", "pp.h5", "--num-parts", "2", "--part-id", "1", "-q") == 0


def _crafted_part(d: Path) -> None:
    assert run_cli("predict", "-i", "images", "-o", "pp.h5", "--num-parts", "2", "--part-id", "0", "-q") == 0
    assert run_cli("predict", "-i", "images", "-o", "pp.h5", "--num-parts", "2", "--part-id", "1", "-q") == 0
    _craft("external", src="pp.part1-of-2.h5", dst="pp.part1-of-2.h5", case="c01")(d)


def _replace_parent(d: Path) -> None:
    """predict.h5 rewritten after samples.h5 was made from it (another fingerprint)."""
    with h5py.File(d / "predict.h5", "r+") as f:
        f.attrs["fingerprint"] = "0" * 32


def _touch_input(d: Path) -> None:
    img = np.asarray(Image.open(d / "images" / "c02.png"))
    Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(d / "images" / "c02.png", compress_level=1)


def _manifest(text: str, bom: bool = False) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        (d / "m.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())

    return f


def _chain(*fs: Callable[[Path], None]) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        for g in fs:
            g(d)

    return f


P = ["-q", "--device", "cpu"]
ROWS: list[Row] = [
    # ---- usage errors and unreadable files (existing behaviour, kept) ----
    Row("missing-input", "old", ["predict", "-i", "nope", "-o", "p2.h5", *P], 2, r"nope: input not found"),
    Row("missing-checkpoint", "old", ["predict", "-i", "images", "-m", "none.pt", "-o", "p2.h5", *P], 2,
        r"none\.pt: checkpoint not found"),
    Row("bad-device", "old", ["predict", "-i", "images", "-o", "p2.h5", "--device", "tpu", "-q"], 2, r"--device"),
    Row("wrong-stage", "old", ["sample", "-i", "samples.h5", "-o", "s2.h5", *P], 2,
        r"is a 'sample' file, expected predict"),
    Row("unknown-method", "old", ["sample", "--method", "magic", "-o", "s2.h5", *P], 2, r"--method magic: unknown"),
    Row("truncated-png", "old", ["predict", "-i", "bad", "-o", "p2.h5", *P], 1, r"cannot decode image",
        _chain(lambda d: shutil.copytree(d / "images", d / "bad"),
               lambda d: (d / "bad" / "c01.png").write_bytes((d / "images" / "c01.png").read_bytes()[:60])),
        one_line=False),
    Row("empty-image", "old", ["predict", "-i", "bad", "-o", "p2.h5", *P], 1, r"c01\.png.*file is empty",
        _chain(lambda d: shutil.copytree(d / "images", d / "bad"), lambda d: (d / "bad" / "c01.png").write_bytes(b"")),
        one_line=False),
    Row("mask-shape", "old", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 1,
        r"mask shape \(20, 20\) differs",
        _chain(lambda d: shutil.copytree(d / "masks", d / "masks2"),
               lambda d: _png(d / "masks2" / "c01.png", np.zeros((20, 20), np.uint8))), one_line=False),
    Row("empty-manifest", "old", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 2, r"manifest has no rows",
        _manifest("case,image\n")),
    # ---- 1: another input into an existing output; 17: batch size ----
    Row("rerun-other-input", "1", ["predict", "-i", "images2", "--masks", "masks", "-o", "predict.h5", *P], 2,
        r"input \(-i/--input\): 'images' -> 'images2'", _chain(_images2, lambda d: shutil.copy(
            d / "masks" / "c00.png", d / "masks" / "c09.png"))),
    Row("rerun-other-masks", "1", ["predict", "-i", "images", "--masks", "masks2", "-o", "predict.h5", *P], 2,
        r"masks \(--masks\): 'masks' -> 'masks2'", lambda d: shutil.copytree(d / "masks", d / "masks2")),
    Row("rerun-no-masks", "1", ["predict", "-i", "images", "-o", "predict.h5", *P], 2, r"masks \(--masks\)"),
    Row("rerun-changed-files", "1", ["predict", "-i", "images", "--masks", "masks", "-o", "predict.h5", *P], 2,
        r"inputs_fingerprint \(the input files", _touch_input),
    Row("merge-other-inputs", "1", ["merge", "-o", "pp.h5", "-q"], 2,
        r"options differ.*input \(-i/--input\)", _parts_of_other_inputs),
    Row("rerun-batch-size", "17", ["predict", "-i", "images", "--masks", "masks", "--batch-size", "2", *P], 2,
        r"batch_size \(--batch-size\): 8 -> 2"),
    Row("sample-batch-size", "17", ["sample", "--method", "tta", "-T", "2", "--batch-size", "3", *P], 2,
        r"batch_size \(--batch-size\): 8 -> 3"),
    # ---- 2: a parent that changed is refused before any case ----
    Row("changed-parent", "2", ["uncertainty", "-i", "samples.h5", "-o", "u2.h5", "-q"], 2,
        r"predict\.h5 has changed since", _replace_parent),
    Row("changed-grandparent", "2", ["aggregate", "-i", "uncertainty.h5", "-o", "f2.csv", "-q"], 2,
        r"predict\.h5 has changed since", _replace_parent, one_line=False),
    # ---- 4: output over an input or ancestor ----
    Row("sample-onto-input", "4", ["sample", "-i", "predict.h5", "-o", "predict.h5", "--overwrite", *P], 2,
        r"same file as -i"),
    Row("uncertainty-onto-ancestor", "4", ["uncertainty", "-i", "samples.h5", "-o", "predict.h5", "--overwrite",
                                           "-q"], 2, r"same file as an ancestor of -i \(predict\)"),
    Row("predict-onto-checkpoint", "4", ["predict", "-i", "images", "-o", "seg.pt", "--overwrite", *P], 2,
        r"same file as -m"),
    Row("aggregate-onto-input", "4", ["aggregate", "-i", "uncertainty.h5", "-o", "uncertainty.h5", "--overwrite",
                                      "-q"], 2, r"is an HDF5 stage file"),
    # ---- 8: NaN / inf voxels ----
    Row("nifti-nan", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", *P], 1,
        r"v1\.nii\.gz \(case v1\): 4 of 960 voxel\(s\) are NaN", lambda d: _ct(d, np.nan), one_line=False),
    Row("nifti-inf", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", *P], 1, r"are \+inf",
        lambda d: _ct(d, np.inf), one_line=False),
    Row("nifti-neg-inf", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", *P], 1, r"are -inf",
        lambda d: _ct(d, -np.inf), one_line=False),
    Row("tiff-nan", "8", ["predict", "-i", "tif", "-m", "ct.pt", "-o", "p2.h5", *P], 1, r"t1\.tif.*NaN",
        _float_tiff, one_line=False),
    # no error; the untrained toy model may trip the all-background guard rail (a warning line, nothing else)
    Row("nan-policy-zero", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", "--nan-policy", "zero", *P],
        0, r"^(uqseg: warning: ct\.pt predicts only background[^\n]*\n)?$", lambda d: _ct(d, np.nan)),
    Row("nan-policy-bad", "8", ["predict", "-i", "ct", "-m", "ct.pt", "-o", "p2.h5", "--nan-policy", "drop", *P],
        2, r"--nan-policy 'drop'", lambda d: _ct(d, np.nan)),
    # ---- 9: mask labels ----
    Row("mask-0-128-255", "9", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 1,
        r"c01\.png \(case c01\): mask values 128, 255 are not labels", lambda d: _masks_with(d, [0, 128, 255]),
        one_line=False),
    Row("mask-label-7", "9", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 1,
        r"mask values 7 are not labels.*background, class1", lambda d: _masks_with(d, [0, 1, 7]), one_line=False),
    Row("mask-jpeg-noise", "9", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 1,
        r"JPEG mask(.|\n)*mask values .* are not labels", lambda d: _masks_with(d, [], ".jpg"), one_line=False),
    Row("rater-0-100", "9", ["predict", "-i", "images", "--raters", "masks2", "-o", "p2.h5", *P], 1,
        r"mask values 100 are not labels", lambda d: _masks_with(d, [0, 100]), one_line=False),
    Row("mask-0-1-accepted", "9", ["predict", "-i", "images", "--masks", "masks2", "-o", "p2.h5", *P], 0, r"^$",
        lambda d: _masks_with(d, [0, 1])),
    # ---- 10: files of another kind ----
    Row("text-checkpoint", "10", ["predict", "-i", "images", "-m", "txt.pt", "-o", "p2.h5", *P], 2,
        r"txt\.pt: not a uqseg checkpoint: it is a text file", _write("txt.pt", "epochs: 3\n"), ["KeyError"]),
    Row("pickled-code-checkpoint", "10", ["predict", "-i", "images", "-m", "evil.pt", "-o", "p2.h5", *P], 2,
        r"evil\.pt: refused: the file carries pickled Python objects \(print\)", _pickled_code("evil.pt"),
        ["weights_only", "Weights only"]),
    Row("hdf5-as-checkpoint", "10", ["sample", "-m", "predict.h5", "-o", "s2.h5", *P], 2,
        r"predict\.h5: not a uqseg checkpoint: it is an HDF5 file"),
    Row("pickled-quality-model", "10", ["score", "--method", "tta", "--measure", "entropy", "--model", "q.pt",
                                        "-o", "s.csv", "-q"], 2,
        r"q\.pt: refused: the file carries pickled Python objects", _pickled_code("q.pt"), ["weights_only"]),
    Row("foreign-hdf5", "10", ["sample", "-i", "other.h5", "-o", "s2.h5", *P], 2,
        r"other\.h5: an HDF5 file of another kind \(schema 3\)", _foreign_h5, ["KeyError", "identifier"]),
    Row("foreign-hdf5-info", "10", ["info", "other.h5"], 2, r"HDF5 file of another kind", _foreign_h5,
        ["KeyError"]),
    Row("text-as-stage-file", "10", ["uncertainty", "-i", "features.csv", "-o", "u2.h5", "-q"], 2,
        r"not a readable HDF5 file: it is a text file"),
    Row("bad-config-json", "10", ["sample", "-i", "bad.h5", "-o", "s2.h5", *P], 2,
        r"'config' attribute is not JSON", _bad_config_h5),
    # ---- 11: manifests and case ids ----
    Row("manifest-bom", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 0, r"^$",
        _manifest("case,image\nc00,images/c00.png\n", bom=True)),
    Row("manifest-spaces", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 0, r"^$",
        _manifest("case , image\n  c00 ,images/c00.png\n")),
    Row("manifest-slash-id", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 2,
        r"invalid case id 'a/b' \(holds '/'", _manifest("case,image\na/b,images/c00.png\n")),
    Row("manifest-newline-id", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 2,
        r"control character", _manifest('case,image\n"a\nb",images/c00.png\n')),
    Row("manifest-long-id", "11", ["predict", "-i", "m.csv", "-o", "p2.h5", *P], 2,
        r"longer than 200 bytes", _manifest(f"case,image\n{'x' * 230},images/c00.png\n")),
    # ---- 13: crafted stage files ----
    Row("external-link-case", "13", ["sample", "-i", "crafted.h5", "-o", "s2.h5", *P], 2,
        r"crafted\.h5: refused: /cases/c01 is an external link", _craft("link")),
    Row("external-link-meta", "13", ["sample", "-i", "crafted.h5", "-o", "s2.h5", *P], 2,
        r"refused: /meta/extra is an external link", _craft("meta-link")),
    Row("external-storage", "13", ["sample", "-i", "crafted.h5", "-o", "s2.h5", *P], 2,
        r"refused: /cases/c01/segmentation is a dataset stored in an external file", _craft("external"),
        one_line=False),
    Row("virtual-dataset", "13", ["evaluate", "-i", "crafted.h5", "-o", "e.csv", "-q"], 2,
        r"refused: /cases/c01/segmentation is a virtual dataset", _craft("virtual"), one_line=False),
    Row("crafted-info", "13", ["info", "crafted.h5"], 2, r"external file", _craft("external")),
    Row("crafted-merge", "13", ["merge", "-o", "pp.h5", "-q"], 2, r"pp\.part1-of-2\.h5: refused: .*external file",
        _crafted_part),
    Row("crafted-samples", "13", ["uncertainty", "-i", "crafted.h5", "-o", "u2.h5", "-q"], 2,
        r"refused: /cases/c01 is an external link", _craft("link", src="samples.h5")),
]
