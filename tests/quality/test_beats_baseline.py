"""The summary flags every regressor that does not beat the best single feature of its method and measure."""

from __future__ import annotations

import math

import pandas as pd

from uqseg_cli.quality.scoring import beats_baseline


def test_beats_baseline_per_method_and_measure() -> None:
    summ = pd.DataFrame(
        {
            "method": ["tta", "tta", "tta", "mcdropout", "mcdropout", "ensemble"],
            "measure": ["entropy"] * 6,
            "framework": ["seg-unc", "features-forest", "baseline", "seg-unc", "baseline", "seg-unc"],
            "r2": [0.30, 0.71, 0.52, 0.40, 0.39, 0.9],
        }
    )
    got = beats_baseline(summ).tolist()
    # tta: 0.30 < 0.52 fails, 0.71 beats; baseline rows blank; mcdropout 0.40 > 0.39; ensemble has no baseline
    assert got == [False, True, "", True, "", ""]
    summ.loc[0, "r2"] = math.nan
    assert beats_baseline(summ).tolist()[0] == ""
    # below zero nothing is beaten, even a worse baseline
    summ.loc[3, "r2"], summ.loc[4, "r2"] = -0.2, -0.7
    assert beats_baseline(summ).tolist()[3] is False
