"""Benchmark `uqseg explain`'s pieces side by side with naive paths; prints times and ratios.

1. Grad-CAM of a resnet18 quality regressor (5 input channels, 256x256): our batched implementation
   (one backward per batch, gradients w.r.t. the hooked activation only) against the naive loop that
   pytorch-grad-cam-style code runs (one case at a time, full ``.backward()`` that also fills every
   parameter's ``.grad``). The maps must agree.
2. UMAP of 150 embeddings (PH2 size): first call in the process (numba compilation) and a warm call.
3. Figure writing: one 2-panel overlay PNG per case, PNG vs PNG+PDF.

Run: python benchmarks/bench_explain.py [--cases 16] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def naive_gradcam(model, x, layer_name):
    """One case at a time, full backward (parameter grads too), hooks on the layer output."""
    layer = dict(model.named_modules())[layer_name]
    maps = []
    store = {}

    def fwd(mod, inp, out):
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    h = layer.register_forward_hook(fwd)
    try:
        for i in range(x.shape[0]):
            model.zero_grad()
            out = model(x[i : i + 1])
            out.sum().backward()
            a, g = store["a"].detach(), store["g"].detach()
            w = g.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((w * a).sum(1))
            cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear",
                                                  align_corners=False)[:, 0].clamp_min(0)
            maps.append(cam)
    finally:
        h.remove()
    return torch.cat(maps)


def timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    from uqseg_cli.explain.gradcam import grad_cam
    from uqseg_cli.quality.models import QualityRegressor

    model = QualityRegressor("resnet18", in_chans=5).eval()
    x = torch.randn(args.cases, 5, args.size, args.size)
    layer = model.gradcam_layer

    def ours():
        step = args.batch
        return torch.cat([grad_cam(model, x[i : i + step], layer=layer).cam for i in range(0, len(x), step)])

    def ours_b1():
        return torch.cat([grad_cam(model, x[i : i + 1], layer=layer).cam for i in range(len(x))])

    grad_cam(model, x[:1], layer=layer)  # warm-up
    t_naive, m_naive = timed(lambda: naive_gradcam(model, x, layer))
    t_b1, m_b1 = timed(ours_b1)
    t_ours, m_ours = timed(ours)
    torch.testing.assert_close(m_ours, m_naive, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(m_b1, m_naive, rtol=1e-4, atol=1e-6)
    n = args.cases
    print(f"Grad-CAM resnet18, {n} cases 5x{args.size}x{args.size}, 2 threads")
    print(f"  naive (per case, full backward):   {t_naive:7.2f} s  {1000 * t_naive / n:7.1f} ms/case")
    print(f"  ours, batch 1 (activation grads):  {t_b1:7.2f} s  {1000 * t_b1 / n:7.1f} ms/case  "
          f"ratio {t_b1 / t_naive:.2f}x")
    print(f"  ours, batch {args.batch}:                     {t_ours:7.2f} s  {1000 * t_ours / n:7.1f} ms/case  "
          f"ratio {t_ours / t_naive:.2f}x")

    from uqseg_cli.explain.embedding import umap_embed

    emb = np.random.default_rng(0).normal(size=(150, 512))
    t_first, a = timed(lambda: umap_embed(emb, seed=0))
    t_warm, b = timed(lambda: umap_embed(emb, seed=0), repeat=2)
    assert np.array_equal(a, b)
    print(f"UMAP 150 x 512: first call {t_first:.2f} s (numba compilation), warm {t_warm:.2f} s, "
          f"ratio {t_warm / t_first:.2f}x; identical coordinates: True")

    from uqseg_cli.explain import plots

    rng = np.random.default_rng(1)
    img = (rng.random((3, 286, 383)) * 255).astype(np.uint8)
    heat = rng.random((286, 383)).astype(np.float32)
    seg = np.zeros((286, 383), np.uint8)
    seg[80:200, 100:280] = 1
    with tempfile.TemporaryDirectory() as d:
        def write(fmts):
            for i in range(5):
                plots.save_figure(plots.overlay_figure(img, heat, seg, seg), Path(d) / f"c{i}", fmts)

        t_png, _ = timed(lambda: write(("png",)))
        t_pdf, _ = timed(lambda: write(("png", "pdf")))
    print(f"overlay figure 383x286 (PH2 size): PNG {1000 * t_png / 5:.0f} ms/case, PNG+PDF "
          f"{1000 * t_pdf / 5:.0f} ms/case, ratio {t_pdf / t_png:.2f}x")


if __name__ == "__main__":
    main()
