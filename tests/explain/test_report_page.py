"""The report as a person reads it: the HTML parses, every image exists, every number on the page is the CSVs',
figure titles and captions agree, the headline says when the quality model fails, colour scales are fixed."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.explain.synth import write_bins, write_quality_model, write_scores, write_uncertainty
from uqseg_cli.cli.app import app
from uqseg_cli.explain import plots
from uqseg_cli.explain.gradcam import combined_cam, default_layers
from uqseg_cli.explain.pipeline import quality_headline
from uqseg_cli.explain.report import missing_references

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Strict enough: every non-void tag closed in order; collects tables, images, captions, the headline."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []
        self.tables, self.imgs, self.captions, self.headline = [], [], [], None
        self._text, self._cell, self._row, self._in = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "figcaption" or (tag == "p" and a.get("id") == "headline"):
            self._in, self._text = tag, []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self.tables[-1].append(self._row)
        elif tag == self._in:
            text = "".join(self._text).strip()
            if tag == "figcaption":
                self.captions.append(text)
            else:
                self.headline = text
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in is not None:
            self._text.append(data)


def _frame(rows):
    return pd.DataFrame(rows[1:], columns=rows[0])


def _same(page_value: str, value: float) -> bool:
    """A number as the page prints it (4 significant digits) equals the CSV's."""
    if page_value == "":
        return not np.isfinite(value)
    return float(page_value) == pytest.approx(float(value), rel=6e-4, abs=1e-12)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("report")
    truth = write_uncertainty(d / "uncertainty.h5", n=6)
    write_quality_model(d / "quality.pt")
    scores = write_scores(d / "scores.csv", truth)
    write_bins(d / "metrics.bins.csv")
    summary = pd.DataFrame(
        [
            {"method": "tta", "measure": "entropy", "framework": "img-seg-unc", "n": 6, "r2": -0.1234,
             "pearson": 0.2, "spearman": 0.1, "mae": 0.2, "aurc": 0.3, "detail": "test_resnet"},
            {"method": "tta", "measure": "entropy", "framework": "baseline", "n": 6, "r2": 0.4567,
             "pearson": 0.7, "spearman": 0.6, "mae": 0.1, "aurc": 0.2, "detail": "entropy/foreground (3/3 folds)"},
        ]
    )
    summary.to_csv(d / "scores.summary.csv", index=False)
    metrics = pd.DataFrame(
        [
            {"method": "tta", "class": cls, "metric": m, "n": 3, "mean": v, "std": 0.01, "median": v, "pooled": p}
            for cls, m, v, p in [("foreground", "dice_consensus", 0.81234, math.nan), ("all", "ece", 0.0512, 0.04987),
                                 ("all", "brier", 0.1, math.nan), ("foreground", "volume_seg_ml", 5.0, math.nan),
                                 ("background", "dice_consensus", 0.99, math.nan)]
        ]
    )
    metrics.to_csv(d / "metrics.summary.csv", index=False)
    (d / "metrics.csv").write_text("case,method,class\n")
    titles = {}
    real = plots.heat_figure

    def spy(*a, **kw):
        fig = real(*a, **kw)
        titles.setdefault(kw.get("heat_label", ""), []).append(kw["title"])
        return fig

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "heat_figure", spy)
    out = d / "explain"
    res = CliRunner().invoke(app, ["explain", "-i", str(d / "scores.csv"), "-m", str(d / "quality.pt"), "-o", str(out),
                                   "--uncertainty-cases", "2", "--device", "cpu", "-q"])
    mp.undo()
    assert res.exit_code == 0, res.output
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    return d, out, page, scores, summary, metrics, titles


def test_html_parses_and_every_image_exists(report):
    d, out, page, *_ = report
    assert page.errors == [] and page.stack == []
    assert page.imgs and all((out / src).is_file() for src in page.imgs)
    assert missing_references(out / "report.html") == []
    html_text = (out / "report.html").read_text()
    for name in ("scores.csv", "scores.summary.csv", "metrics.summary.csv", "metrics.csv"):
        assert f'href="../{name}"' in html_text  # the full tables are linked, not dumped


def test_numbers_on_the_page_equal_the_csvs(report):
    d, out, page, scores, summary, metrics, _ = report
    tables = [_frame(t) for t in page.tables]
    quality = next(t for t in tables if "r2" in t.columns)
    for _, row in quality.iterrows():
        want = summary[summary["framework"] == row["framework"]].iloc[0]
        for col in ("n", "r2", "pearson", "spearman", "mae", "aurc"):
            assert _same(row[col], want[col]), (row["framework"], col)
    lowest = next(t for t in tables if "predicted_dice" in t.columns)
    cnn = scores[scores["framework"] == "img-seg-unc"].set_index("case")
    for _, row in lowest.iterrows():
        assert _same(row["predicted_dice"], cnn.loc[row["case"], "predicted_dice"])
        assert _same(row["true_dice"], cnn.loc[row["case"], "true_dice"])
    digest = next(t for t in tables if "dice_consensus" in t.columns)
    assert len(digest) == 2 and "background" not in set(digest["class"])  # a digest, not the whole summary
    for _, row in digest.iterrows():
        for metric in ("dice_consensus", "ece", "brier"):
            hit = metrics[(metrics["class"] == row["class"]) & (metrics["metric"] == metric)]
            want = (hit["pooled"].iloc[0] if pd.notna(hit["pooled"].iloc[0]) else hit["mean"].iloc[0]) if len(
                hit) else math.nan
            assert _same(row[metric], want), (row["class"], metric)
    assert "volume_seg_ml" not in digest.columns
    # captions: predicted and true as in scores.csv, the model's own output as in gradcam-high.h5
    with h5py.File(out / "gradcam-high.h5", "r") as f:
        outputs = {c: float(f[f"cases/{c}"].attrs["predicted"]) for c in f["cases"]}
    cam_caps = [c for c in page.captions if "Grad-CAM" not in c and c.split(":")[0] in outputs]
    assert cam_caps
    for cap in cam_caps:
        cid = cap.split(":")[0]
        m = re.search(r"predicted dice ([\d.]+), true ([\d.]+)", cap)
        assert m.group(1) == f"{cnn.loc[cid, 'predicted_dice']:.3f}"
        assert m.group(2) == f"{cnn.loc[cid, 'true_dice']:.3f}"
        o = re.search(r"this model's output ([\d.]+)", cap)
        assert o is None or o.group(1) == f"{outputs[cid]:.3f}"


def test_titles_and_captions_say_the_same(report):
    _, _, page, _, _, _, titles = report
    cam_titles = titles["Grad-CAM (high)"]
    assert cam_titles and all(t in page.captions for t in cam_titles)
    unc_titles = [t for k, v in titles.items() if k.startswith("tta ") for t in v]
    assert len(unc_titles) == 2
    assert all(any(c.startswith(t) for c in page.captions) for t in unc_titles)


def test_headline_says_the_model_fails(report):
    _, _, page, _, summary, _, _ = report
    assert page.headline.startswith("The quality model fails here")
    assert "R² = -0.123" in page.headline and "R² = 0.457" in page.headline


def test_headline_levels():
    s = pd.DataFrame([{"method": "m", "measure": "e", "framework": "f", "n": 9, "r2": 0.3, "pearson": 0.6,
                       "mae": 0.1, "detail": ""}, {"method": "m", "measure": "e", "framework": "baseline", "n": 9,
                                                   "r2": 0.5, "pearson": 0.7, "mae": 0.1, "detail": "x/foreground"}])
    _, text, level = quality_headline(None, s, "m", "e", "f")
    assert level == "weak" and "below the best single feature" in text
    s.loc[0, "r2"] = 0.6
    assert quality_headline(None, s, "m", "e", "f")[2] == "ok"
    stats = {"n": 5, "r2": -0.5, "pearson": 0.1, "mae": 0.3}
    assert quality_headline(stats, None, "m", "e", "f")[2] == "fail"
    assert quality_headline(None, None, "m", "e", "f") == (None, "", "")


def test_uncertainty_scale_is_fixed_per_measure():
    ent = plots.uncertainty_scale("entropy", 2)
    assert ent["vmax"] == pytest.approx(math.log(2)) and "nats" in ent["units"]
    assert plots.uncertainty_scale("mutual_information", 4)["vmax"] == pytest.approx(math.log(4))
    assert plots.uncertainty_scale("confidence", 3)["vmax"] == pytest.approx(2 / 3)
    epkl = plots.uncertainty_scale("epkl", 2, [np.arange(101.0), np.zeros(3)])
    assert epkl["vmax"] == pytest.approx(np.percentile(np.r_[np.arange(101.0), np.zeros(3)], 99))


def test_gradcam_combines_finer_stages():
    """The default map is not the last stage's few voxels: it combines the last three resolution stages."""
    from uqseg_cli.quality.models import QualityRegressor

    torch.manual_seed(0)
    model = QualityRegressor("resnet18", in_chans=3).eval()
    x = torch.randn(1, 3, 128, 128)
    layers = default_layers(model, x)
    assert layers == ["backbone.layer2", "backbone.layer3", "backbone.layer4"]
    res = combined_cam(model, x, layers)
    assert res.cam.shape == (1, 128, 128) and res.layer_shape[2:] == (16, 16)
    assert float(res.cam.max()) <= 1.0 + 1e-6
    # finer than a 4x4 blob: many more distinct levels than an upsampled 4x4 map has in any 32x32 block
    block = res.cam[0, :32, :32]
    assert torch.unique((block * 1000).round()).numel() > 16
