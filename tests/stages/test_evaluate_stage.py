"""``stages.evaluate`` runs from Python without the CLI and writes what the command writes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.cli.test_evaluate import _synthetic_cases, write_predict, write_samples
from tests.helpers import run_captured
from uqseg_cli.errors import UqsegError
from uqseg_cli.stages import evaluate
from uqseg_cli.stages.base import Report, resume_config

TABLES = ("m.csv", "m.bins.csv", "m.summary.csv")


@pytest.fixture
def files(tmp_path):
    cases = _synthetic_cases(n=3)
    predict = write_predict(tmp_path / "predict.h5", cases)
    write_samples(tmp_path / "samples.h5", predict, cases)
    return tmp_path


def test_python_run_equals_the_command(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    (files / "cli").mkdir()
    (files / "py").mkdir()
    code, out, _ = run_captured(capsys, "evaluate", "-o", "cli/m.csv", "--crps", "ensemble,gaussian,ensemble",
                                "--json", "-q")  # default input: ./samples.h5
    assert code == 0
    doc = json.loads(out)
    opts = evaluate.EvaluateOptions(output="py/m.csv", crps=["ensemble", "gaussian"])
    result = evaluate.run(opts, Report(quiet=True))
    assert sorted(result.done) == ["case00", "case01", "case02"] and not result.failed
    for name in TABLES:
        assert (files / "cli" / name).read_bytes() == (files / "py" / name).read_bytes()
    # the --json document is the result's summary
    assert json.loads(json.dumps(result.summary)) == {**doc, "output": "py/m.csv", "bins": "py/m.bins.csv"}
    assert doc["input"] == "samples.h5" and doc["crps"] == ["ensemble", "gaussian"] and doc["part"] == [0, 1]


def test_parts_and_merge(files):
    whole = files / "whole" / "m.csv"
    evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output=whole), Report(quiet=True))
    part = files / "parts" / "m.csv"
    for k in (0, 1):
        r = evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output=part, num_parts=2, part_id=k),
                         Report(quiet=True))
        assert r.out == files / "parts" / f"m.part{k}-of-2.csv"
    merged = evaluate.run(evaluate.EvaluateOptions(output=part, merge_parts=True), Report(quiet=True))
    assert merged.out == part and sorted(merged.done) == ["case00", "case01", "case02"]
    assert "input" not in merged.summary and merged.summary["cases"] == 3
    for name in TABLES:  # read back from CSV: equal up to the text round trip of the floats; bins in part order
        a, b = pd.read_csv(files / "whole" / name), pd.read_csv(files / "parts" / name)
        if name == "m.bins.csv":
            a, b = (t.sort_values(list(t.columns[:7])).reset_index(drop=True) for t in (a, b))
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(UqsegError, match="needs a file -o"):
        evaluate.run(evaluate.EvaluateOptions(output="-", merge_parts=True))


def test_methods_are_checked_against_the_file(files):
    with pytest.raises(UqsegError, match="it has tta"):
        evaluate.run(evaluate.EvaluateOptions(input=files / "samples.h5", output="-", methods=["mcdropout"]))
    with pytest.raises(UqsegError, match="is a predict file"):
        evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output="-", methods=["tta"]))
    with pytest.raises(UqsegError, match="--crps ensemble needs sampled volumes"):
        evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output="-", crps=["ensemble"]))


def test_options_validate_resolve_and_config_is_derived_from_fields():
    with pytest.raises(UqsegError, match="--protocol 'x': choose from uqseg, curvas2024"):
        evaluate.EvaluateOptions(protocol="x")
    with pytest.raises(UqsegError, match="--crps nope: choose from gaussian, curvas, ensemble"):
        evaluate.EvaluateOptions(crps=["gaussian", "nope"])
    with pytest.raises(UqsegError, match="--bins 15 conflicts with --protocol curvas2024"):
        evaluate.EvaluateOptions(protocol="curvas2024", bins=15)
    # the values the command records (in --json): the protocol, the resolved bins and CRPS modes
    assert resume_config(evaluate.EvaluateOptions()) == {"protocol": "uqseg", "n_bins": 15, "crps": ["gaussian"]}
    opts = evaluate.EvaluateOptions(protocol="curvas2024", crps=["gaussian", "curvas", "gaussian"])
    assert resume_config(opts) == {"protocol": "curvas2024", "n_bins": 50, "crps": ["gaussian", "curvas"]}
    assert resume_config(evaluate.EvaluateOptions(protocol="curvas2024")) == {
        "protocol": "curvas2024", "n_bins": 50, "crps": ["curvas"]}
    assert resume_config(evaluate.EvaluateOptions(bins=7)) == {"protocol": "uqseg", "n_bins": 7, "crps": ["gaussian"]}
    e = evaluate.EvaluateOptions(protocol="curvas2024", bins=50).eval_options()
    assert (e.n_bins, e.crps_modes, e.protocol) == (50, ("curvas",), "curvas2024")
    assert evaluate.EvaluateOptions(output="-").to_stdout


def _tables_the_old_way(src, out, options):
    """Every row and bin row of every case held in memory, then sorted, summarised and written in one go (the code
    before the bins were streamed)."""
    import numpy as np

    from uqseg_cli.io.store import StageFile
    from uqseg_cli.metrics.evaluation import BIN_COLUMNS

    rows, bins, failed = [], [], {}
    with StageFile(src) as sf:
        first = sf.case(sf.case_ids[0])
        methods = evaluate.resolve_methods(sf, src, first, options)
        names = evaluate.class_names(sf, first.dataset("probabilities").shape[0])
        for cid in sf.case_ids:
            r, b, why = evaluate.evaluate_one(sf, src, cid, methods, names, options)
            rows.extend(r)
            bins.extend(tuple(d.get(c, np.nan) for c in BIN_COLUMNS) for d in b)
            if why is not None:
                failed[cid] = why
    b_path, s_path = evaluate.side_paths(out)
    evaluate.write_tables(pd.DataFrame(rows), pd.DataFrame(bins, columns=BIN_COLUMNS), out, b_path, s_path, True,
                          Report(quiet=True), failed)


@pytest.mark.parametrize("which", ["samples.h5", "predict.h5"])
def test_streamed_bins_give_the_tables_of_the_in_memory_way(tmp_path, which):
    from tests.cli.test_evaluate import _synthetic_cases, write_predict, write_samples

    cases = _synthetic_cases(n=5)
    cases["case03"]["raters"][1, 0, 0, 0] = 7  # a failing case: the others are still written
    predict = write_predict(tmp_path / "predict.h5", cases)
    write_samples(tmp_path / "samples.h5", predict, cases)
    opts = evaluate.EvaluateOptions(input=tmp_path / which, output=tmp_path / "new" / "m.csv",
                                    crps=["gaussian", "curvas"])
    result = evaluate.run(opts, Report(quiet=True))
    assert list(result.failed) == ["case03"] and len(result.done) == 4
    _tables_the_old_way(tmp_path / which, tmp_path / "old" / "m.csv", opts)
    for name in TABLES:
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes(), name
    assert len(pd.read_csv(tmp_path / "new" / "m.bins.csv")) > 4 * 15  # the bins are really there
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_an_interrupted_run_leaves_no_table(files, monkeypatch):
    calls = []
    real = evaluate.evaluate_one

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_one", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output=files / "out" / "m.csv"),
                     Report(quiet=True))
    assert not (files / "out").exists() or list((files / "out").iterdir()) == []


def test_bins_to_stdout_come_after_the_rows(files, capsys):
    evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output=files / "m.csv"), Report(quiet=True))
    capsys.readouterr()
    evaluate.run(evaluate.EvaluateOptions(input=files / "predict.h5", output="-", bins_out="-"), Report(quiet=True))
    out = capsys.readouterr().out
    rows, bins = (files / "m.csv").read_text(), (files / "m.bins.csv").read_text()
    assert out == rows + bins
