"""A resume accepts the same --method (and --measure) list given in another order."""

from __future__ import annotations

import json

import torch

from tests.bayes.fixtures import make_checkpoint, make_predict, run_cli
from uqseg_cli.io.store import StageFile

torch.set_num_threads(1)


def test_sample_resumes_with_methods_in_another_order(tmp_path, monkeypatch, capsys):
    make_predict(tmp_path / "predict.h5", n_cases=3)
    ck = make_checkpoint(tmp_path / "seg.pt")
    out = tmp_path / "samples.h5"
    base = ("sample", "-i", tmp_path / "predict.h5", "-m", ck, "-T", "3", "-o", out)

    import uqseg_cli.bayes.sampling as S

    real = S.sample_case
    calls = {"n": 0}

    def flaky(case_id, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(case_id, *a, **kw)

    monkeypatch.setattr(S, "sample_case", flaky)
    assert run_cli(*base, "--method", "tta,mcdropout", "-q") == 130
    monkeypatch.setattr(S, "sample_case", real)
    capsys.readouterr()
    assert run_cli(*base, "--method", "mcdropout", "--method", "tta", "--json") == 0
    cap = capsys.readouterr()
    assert "resuming" in cap.err
    doc = json.loads(cap.out)
    assert doc["cases_resumed"] == 1 and doc["cases_done"] == 2 and doc["methods"] == ["mcdropout", "tta"]
    with StageFile(out) as sf:
        assert sf.config["methods"] == ["mcdropout", "tta"]

    unc = tmp_path / "u.h5"
    args = ("uncertainty", "-i", out, "-o", unc, "-q")
    assert run_cli(*args, "--method", "tta,mcdropout", "--measure", "entropy,confidence") == 0
    with StageFile(unc) as uf:
        assert uf.config["methods"] == ["mcdropout", "tta"] and uf.config["measures"] == ["confidence", "entropy"]
    # the same lists in another order are the same run: nothing to redo, nothing refused
    assert run_cli(*args, "--method", "mcdropout,tta", "--measure", "confidence,entropy") == 0
