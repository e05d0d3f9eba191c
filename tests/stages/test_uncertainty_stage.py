"""``stages.uncertainty`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.bayes.fixtures import make_members, make_predict, run_cli
from uqseg_cli.errors import UqsegError
from uqseg_cli.stages import uncertainty
from uqseg_cli.stages.base import Report, resume_config


def test_python_run_equals_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 2)
    assert run_cli("sample", "-m", "seg.pt", "-T", "4", "-q") == 0
    assert run_cli("uncertainty", "-q", "--measure", "entropy,confidence", "-o", "cli.h5") == 0

    opts = uncertainty.UncertaintyOptions(input="samples.h5", output="py.h5", measures=["entropy", "confidence"])
    result = uncertainty.run(opts, Report(quiet=True))
    assert sorted(result.done) == ["case00", "case01"] and not result.failed
    assert opts.measures == ["confidence", "entropy"]  # canonical order
    with h5py.File("cli.h5") as a, h5py.File("py.h5") as b:
        assert a.attrs["config"] == b.attrs["config"]
        for cid in ("case00", "case01"):
            for name in ("tta/entropy", "tta/confidence", "mcdropout/mean_segmentation"):
                assert np.array_equal(a[f"cases/{cid}/{name}"][()], b[f"cases/{cid}/{name}"][()])


def test_options_validate_and_config_is_derived_from_fields():
    with pytest.raises(UqsegError, match="--measure nope"):
        uncertainty.UncertaintyOptions(measures=["nope"])
    with pytest.raises(UqsegError, match="--dtype"):
        uncertainty.UncertaintyOptions(dtype="int8")
    opts = uncertainty.UncertaintyOptions(epkl_pairs="distinct", dtype="float16")
    # every result-changing field, nothing else (paths, parts and the machine do not change results)
    assert resume_config(opts) == {
        "measures": ["confidence", "entropy", "expected_entropy", "mutual_information", "epkl"],
        "epkl_pairs": "distinct",
        "dtype": "float16",
    }


def test_the_example_in_docs_architecture_runs(tmp_path, monkeypatch, capsys):
    """The five-line Python example of docs/architecture.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(from uqseg_cli\.stages.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    make_predict(tmp_path / "predict.h5", n_cases=2)
    make_members(tmp_path / "seg.pt", 2)
    assert run_cli("sample", "-m", "seg.pt", "-T", "3", "-q") == 0
    exec(compile(code, "docs/architecture.md", "exec"), {})
    assert "['case00', 'case01'] {}" in capsys.readouterr().out
    with h5py.File(tmp_path / "unc.h5") as f:
        assert set(f["cases/case00/tta"]) == {"entropy", "mean_segmentation"}
