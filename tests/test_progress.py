"""One progress implementation: plain `i/N ... ETA` lines off a terminal, fits x epochs, step heartbeats."""

from __future__ import annotations

import re
import time

from uqseg_cli.progress import FitProgress, Progress, Steps

LINE = re.compile(r"^uqseg (?P<label>.+?): (?P<i>\d+)/(?P<n>\d+) .*\(elapsed \d+:\d\d, ETA \d+:\d\d\)$")


def test_plain_lines_with_eta_off_a_terminal(capsys):
    p = Progress(3, "stage", interval=0.0)
    for c in ("a", "b", "c"):
        p.advance(c)
    p.close()
    lines = capsys.readouterr().err.splitlines()
    assert [LINE.match(x)["i"] for x in lines] == ["1", "2", "3"]
    assert all(LINE.match(x)["n"] == "3" for x in lines)


def test_quiet_prints_nothing(capsys):
    p = Progress(2, "stage", quiet=True, interval=0.0)
    p.advance("a")
    p.note("hello")
    p.close()
    s = Steps(2, "explain", quiet=True)
    s.start("one")
    s.close()
    assert capsys.readouterr().err == ""


def test_fit_progress_counts_epochs_and_early_stops(capsys):
    f = FitProgress(fits=2, epochs=4, label="score: fits", interval=0.0)
    for e in (1, 2):
        f.epoch("tta/entropy/seg-unc fold 1/1", e, 4)
    f.done("tta/entropy/seg-unc fold 1/1", "fitted on 8 case(s)")  # stopped early after 2 of 4 epochs
    assert f.bar.count == 4
    for e in (1, 2, 3, 4):
        f.epoch("tta/entropy/seg-unc final model", e, 4)
    f.done("tta/entropy/seg-unc final model")
    f.close()
    err = capsys.readouterr().err.splitlines()
    counts = [int(m["i"]) for x in err if (m := LINE.match(x))]
    assert counts == sorted(counts) and counts[-1] == 8 and all(LINE.match(x)["n"] == "8" for x in err if LINE.match(x))
    assert any("fit 1/2 tta/entropy/seg-unc fold 1/1: epoch 2/4" in x for x in err)
    assert any("fitted on 8 case(s)" in x for x in err)


def test_steps_heartbeat_while_a_step_runs(capsys):
    s = Steps(2, "explain", heartbeat=0.05)
    s.start("UMAP")
    time.sleep(0.3)
    s.start("report")
    s.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("uqseg: explain step 1/2: UMAP (elapsed")
    assert any("explain step 1/2 still running" in x for x in err[1:])
    assert err[-1].startswith("uqseg: explain step 2/2: report")
