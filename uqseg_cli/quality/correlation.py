"""The correlation report: every per-case feature against the segmentation quality (Dice, IoU, HD95)."""


from __future__ import annotations

import math

import pandas as pd


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """One row per case, one column per ``method.measure.region`` (columns sorted), from the long table."""
    if long.empty:
        return pd.DataFrame({"case": []})
    key = long["method"] + "." + long["measure"] + "." + long["region"]
    wide = long.assign(feature=key).pivot(index="case", columns="feature", values="value")
    wide = wide.reindex(sorted(wide.columns), axis=1)
    wide.columns.name = None
    return wide.reset_index()


def correlation_table(long: pd.DataFrame, quality: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman of every feature with every quality metric, over the cases that have both.

    ``long``: the long feature table; ``quality``: columns ``case`` and one per metric (e.g. ``dice, iou, hd95``).
    Returns ``method, measure, region, metric, n, pearson, spearman``, sorted by metric, then by decreasing
    ``|spearman|`` (undefined correlations last).
    """
    from uqseg_cli.metrics.regression import pearson, spearman

    metrics = [c for c in quality.columns if c != "case"]
    q = quality.set_index("case")
    rows = []
    for (method, measure, region), grp in long.groupby(["method", "measure", "region"], sort=True):
        g = grp.set_index("case")["value"]
        for metric in metrics:
            both = pd.concat([g, q[metric]], axis=1, join="inner").dropna()
            a, b = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
            rows.append(
                {
                    "method": method,
                    "measure": measure,
                    "region": region,
                    "metric": metric,
                    "n": int(len(both)),
                    "pearson": pearson(a, b) if len(both) >= 2 else math.nan,
                    "spearman": spearman(a, b) if len(both) >= 2 else math.nan,
                }
            )
    out = pd.DataFrame(rows, columns=["method", "measure", "region", "metric", "n", "pearson", "spearman"])
    out["_key"] = -out["spearman"].abs().fillna(-1.0)
    out = out.sort_values(["metric", "_key", "method", "measure", "region"], kind="mergesort").drop(columns="_key")
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# reading a whole uncertainty file (the edge between the store and the maths above)
