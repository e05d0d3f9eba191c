"""Figures: every PNG is written, decodes and is not blank; the numbers in titles match oracles."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.stats import pearsonr
from sklearn.metrics import r2_score

from uqseg_cli.explain import plots


def assert_png_ok(path):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 20 and arr.shape[1] > 20
    # not blank: many distinct colours, not one flat background
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20
    assert arr.std() > 5


def _case2d(h=32, w=40, rgb=True):
    rng = np.random.default_rng(0)
    image = (rng.random((3 if rgb else 1, h, w)) * 255).astype(np.uint8 if rgb else np.float32)
    yy, xx = np.mgrid[:h, :w]
    seg = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 4) ** 2).astype(np.uint8)
    heat = np.exp(-((yy - h / 3) ** 2 + (xx - w / 3) ** 2) / 30.0).astype(np.float32)
    return image, heat, seg


def test_overlay_and_pdf(tmp_path):
    image, heat, seg = _case2d()
    fig = plots.overlay_figure(image, heat, seg, ref=np.roll(seg, 2, axis=1), title="case a")
    paths = plots.save_figure(fig, tmp_path / "sub" / "a", formats=("png", "pdf"))
    assert [p.name for p in paths] == ["a.png", "a.pdf"]
    assert_png_ok(paths[0])
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="does not match"):
        plots.overlay_figure(image, heat[:-1], seg)
    with pytest.raises(ValueError, match="format"):
        plots.save_figure(fig, tmp_path / "x", formats=("gif",))


def test_grey_ct_overlay_without_contours(tmp_path):
    image, heat, _ = _case2d(rgb=False)
    image = image * 2000 - 1000  # HU-like
    fig = plots.heat_figure(image, heat, seg=np.zeros(heat.shape, np.uint8), heat_label="entropy")
    assert_png_ok(plots.save_figure(fig, tmp_path / "ct")[0])


def test_montage_picks_relevant_slices(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 7, 16, 16)).astype(np.float32)
    heat = np.zeros((7, 16, 16), np.float32)
    heat[2, 4:8, 4:8] = 1.0
    heat[5, :, :] = 0.5
    heat[6, 0, 0] = 0.1
    seg = np.zeros((7, 16, 16), np.uint8)
    seg[:, 5:10, 5:10] = 1
    fig, slices = plots.montage_figure(image, heat, seg, num_slices=2, title="vol")
    np.testing.assert_array_equal(slices, [2, 5])
    assert_png_ok(plots.save_figure(fig, tmp_path / "vol")[0])
    fig2 = plots.heat_figure(image, heat, seg, num_slices=4)
    assert_png_ok(plots.save_figure(fig2, tmp_path / "vol4")[0])


def test_display_image():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2) * 10
    np.testing.assert_allclose(plots.display_image(rgb), np.moveaxis(rgb, 0, -1) / 255.0)
    g = np.linspace(-1000, 1000, 101, dtype=np.float32).reshape(1, 1, 101)
    out = plots.display_image(g)
    lo, hi = np.percentile(g[0], [1, 99])
    np.testing.assert_allclose(out[..., 0], np.clip((g[0] - lo) / (hi - lo), 0, 1))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert plots.display_image(np.zeros((1, 4, 4))).max() == 0
    with pytest.raises(ValueError):
        plots.display_image(np.zeros((4, 4)))


def test_pred_vs_true_stats_match_sklearn_scipy(tmp_path):
    rng = np.random.default_rng(2)
    t = rng.uniform(0.5, 1.0, 30)
    p = t + rng.normal(0, 0.05, 30)
    p[3] = np.nan  # ignored
    fig, stats = plots.pred_vs_true_figure(t, p, title="tta / entropy")
    ok = np.isfinite(p)
    assert stats["n"] == 29
    assert stats["r2"] == pytest.approx(r2_score(t[ok], p[ok]), rel=1e-12)
    assert stats["pearson"] == pytest.approx(pearsonr(t[ok], p[ok])[0], rel=1e-12)
    title = fig.axes[0].get_title()
    assert f"R² = {stats['r2']:.3f}" in title and f"Pearson r = {stats['pearson']:.3f}" in title
    assert_png_ok(plots.save_figure(fig, tmp_path / "pvt")[0])


def _brute_force_ece(conf, correct, bins):
    n = len(conf)
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [(c > lo or (b == 0 and c == 0)) and c <= hi for c in conf]
        members = [i for i in range(n) if sel[i]]
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        cf = sum(conf[i] for i in members) / len(members)
        ece += len(members) / n * abs(acc - cf)
        mce = max(mce, abs(acc - cf))
    return ece, mce


def test_reliability_from_sums_matches_brute_force(tmp_path):
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 500)
    correct = (rng.random(500) < conf**2).astype(float)
    bins = 10
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    r = plots.reliability_from_sums(count, conf_sum, acc_sum)
    ece, mce = _brute_force_ece(list(conf), list(correct), bins)
    assert r["ece"] == pytest.approx(ece, rel=1e-12)
    assert r["mce"] == pytest.approx(mce, rel=1e-12)
    assert np.isnan(r["accuracy"][:5]).all()  # confidences >= 0.5: the lower bins are empty
    assert r["weight"].sum() == pytest.approx(1.0)
    fig, _ = plots.reliability_figure(count, conf_sum, acc_sum, title="tta")
    assert f"ECE = {ece:.4f}" in fig.axes[0].get_title()
    assert_png_ok(plots.save_figure(fig, tmp_path / "rel")[0])


def test_umap_scatter(tmp_path):
    rng = np.random.default_rng(4)
    xy = rng.normal(size=(12, 2))
    fig = plots.umap_figure(xy, rng.uniform(0.6, 1.0, 12), "true Dice", "UMAP", labels=[f"c{i}" for i in range(12)])
    assert_png_ok(plots.save_figure(fig, tmp_path / "umap")[0])
    fig2 = plots.umap_figure(xy, np.full(12, np.nan), "true Dice")
    assert_png_ok(plots.save_figure(fig2, tmp_path / "umap2")[0])
