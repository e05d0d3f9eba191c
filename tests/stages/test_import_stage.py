"""``stages.import_`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tests.models.fixtures import run_cli, write_disks
from uqseg_cli.errors import UqsegError
from uqseg_cli.io.store import StageFile, config_json
from uqseg_cli.stages import import_
from uqseg_cli.stages.base import Report, resume_config


def _old_config(images, out, source, names, masks=None, kind="auto", prob_dtype="float16") -> dict:
    """The resume config as `uqseg import` built it by hand before the stage layer."""
    from uqseg_cli.io.cases import discover_cases
    from uqseg_cli.io.fingerprint import input_identity
    from uqseg_cli.io.store import relpath

    specs = discover_cases(images, masks=masks)
    config = {
        "importer": "files",
        **input_identity(specs, images, out, masks, []),
        "predictions": relpath(source, out.resolve().parent),
        "kind": kind,
        "class_names": names,
        "prob_dtype": prob_dtype,
    }
    return json.loads(config_json(config))


def test_python_run_equals_the_command_and_keeps_the_resume_config(tmp_path):
    images, masks = write_disks(tmp_path, 3)
    cli, py = tmp_path / "cli.h5", tmp_path / "out" / "py.h5"
    # the reference masks (0/255) stand in for another tool's label maps
    args = ["-i", images, "--masks", masks, "--from", masks, "--kind", "labels", "--class-names", "bg,disk",
            "--prob-dtype", "float32", "-q"]
    assert run_cli("import", *args, "-o", cli) == 0
    opts = import_.ImportOptions(input=images, masks=masks, source=masks, kind="labels", class_names=["bg, disk"],
                                 prob_dtype="float32", output=py)
    result = import_.run(opts, Report(quiet=True))
    assert sorted(result.done) == ["c00", "c01", "c02"] and not result.failed
    assert result.summary == {"classes": ["bg", "disk"], "mismatched_affine": []}
    with h5py.File(cli) as a, h5py.File(py) as b:
        for cid in ("c00", "c01", "c02"):
            ga, gb = a[f"cases/{cid}"], b[f"cases/{cid}"]
            assert sorted(ga) == sorted(gb) == ["image", "probabilities", "reference", "segmentation"]
            for name in ga:
                assert np.array_equal(ga[name][()], gb[name][()]) and ga[name].dtype == gb[name].dtype
            assert gb["probabilities"].dtype == np.float32
            assert np.array_equal(gb["segmentation"][()], gb["reference"][()])  # the labels, read back
            assert sorted(ga.attrs) == sorted(gb.attrs)
            assert gb.attrs["segmentation_source"] == "argmax" and not gb.attrs["train_case"]
    with StageFile(cli) as sa, StageFile(py) as sb:
        assert sa.config == _old_config(images, cli, masks, ["bg", "disk"], masks, "labels", "float32")
        assert sb.config == _old_config(images, py, masks, ["bg", "disk"], masks, "labels", "float32")


def test_classes_from_the_files_when_not_named(tmp_path):
    images, masks = write_disks(tmp_path, 2)
    out = tmp_path / "p.h5"
    result = import_.run(import_.ImportOptions(input=images, source=masks, kind="labels", output=out),
                         Report(quiet=True))
    assert result.summary["classes"] == ["background", "class1"]
    with StageFile(out) as sf:
        assert sf.config == _old_config(images, out, masks, ["background", "class1"], kind="labels")


def test_options_validate_and_config_fields():
    with pytest.raises(UqsegError, match="--kind 'maps': choose from auto, probabilities, labels"):
        import_.ImportOptions(input="x", source="y", kind="maps")
    with pytest.raises(UqsegError, match="--prob-dtype 'int8'"):
        import_.ImportOptions(input="x", source="y", prob_dtype="int8")
    with pytest.raises(UqsegError, match="--class-names has 2 names but --num-classes is 3"):
        import_.ImportOptions(input="x", source="y", class_names=["a,b"], num_classes=3)
    opts = import_.ImportOptions(input="x", source="y", class_names=["a, b", "a"])
    assert opts.class_names == ["a", "b"] and str(opts.output) == "predict.h5"
    assert resume_config(opts) == {"prob_dtype": "float16", "kind": "auto"}
