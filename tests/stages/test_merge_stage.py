"""``stages.merge`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tests.bayes.fixtures import make_predict
from tests.helpers import run_captured
from uqseg_cli.errors import StoreError
from uqseg_cli.io.sharding import part_path
from uqseg_cli.io.store import StageFile
from uqseg_cli.stages import merge
from uqseg_cli.stages.base import Report


def _parts(tmp_path, n=2):
    """predict.h5 split into ``n`` part files (copies of its cases, as a sharded run writes them)."""
    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.store import write_array

    src = make_predict(tmp_path / "whole.h5", n_cases=5)
    with h5py.File(src, "r") as f:
        arrays = {cid: f[f"cases/{cid}/image"][()] for cid in f["cases"]}
    ids = sorted(arrays)
    for k in range(n):
        run = StageRun("predict", tmp_path / "p.h5", {"x": 1}, ids, num_parts=n, part_id=k, quiet=True)
        run_stage(run, lambda cid, g: write_array(g, "image", arrays[cid]))
    return [part_path(tmp_path / "p.h5", n, k) for k in range(n)]


def test_python_run_equals_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parts = _parts(tmp_path)
    code, out, err = run_captured(capsys, "merge", "-o", "cli.h5", *map(str, parts), "--json")
    assert code == 0 and err == ""
    result = merge.run(merge.MergeOptions(parts=parts, output="py.h5"), Report(quiet=True))
    doc = json.loads(out)
    assert result.summary == {**doc, "out": "py.h5"} and doc["cases"] == 5 and doc["parts"] == 2
    with StageFile("cli.h5") as a, StageFile("py.h5") as b:
        assert a.case_ids == b.case_ids and a.config == b.config and a.stage == b.stage == "predict"
        for cid in a.case_ids:
            assert np.array_equal(a.case(cid).get("image"), b.case(cid).get("image"))


def test_default_parts_and_refusals(tmp_path, capsys):
    parts = _parts(tmp_path)
    result = merge.run(merge.MergeOptions(output=tmp_path / "p.h5"), Report())  # finds p.part*-of-2.h5
    assert "merged 2 part(s), 5 case(s) of stage predict" in capsys.readouterr().err
    assert result.out == tmp_path / "p.h5" and result.summary["missing"] == []
    with pytest.raises(StoreError, match="exists; pass --overwrite"):
        merge.run(merge.MergeOptions(output=tmp_path / "p.h5"), Report(quiet=True))
    parts[1].unlink()
    with pytest.raises(StoreError, match=r"part\(s\) 1 of 2 not found"):
        merge.run(merge.MergeOptions(output=tmp_path / "p.h5", overwrite=True), Report(quiet=True))
    result = merge.run(merge.MergeOptions(output=tmp_path / "p.h5", overwrite=True, allow_missing=True), Report(True))
    assert result.summary["cases"] == 3 and len(result.summary["missing"]) == 2
