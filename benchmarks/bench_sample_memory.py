"""Peak RSS of `uqseg sample` + `uqseg uncertainty` (MC dropout) on the LiTS 128^3 volume for T = 5, 20, 50,
side by side with the common approach of stacking all T samples first and computing the maps from the stack.

Each measurement runs in a fresh process (ru_maxrss). The model is a small 2D U-Net with random weights,
run slice-wise (128 slices): memory, not accuracy, is measured. Needs ../shared/data/lits117.
Usage: python benchmarks/bench_sample_memory.py [--T 5 20 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LITS = REPO / ".." / "shared" / "data" / "lits117" / "img_117.nii.gz"


def setup(d: Path) -> None:
    import nibabel as nib
    import numpy as np
    import torch

    from uqseg_cli.io.runner import StageRun, run_stage
    from uqseg_cli.io.store import write_array
    from uqseg_cli.models import create_model
    from uqseg_cli.models.checkpoint import Checkpoint, save_checkpoint
    from uqseg_cli.models.preprocessing import Preprocessing

    vol = np.asarray(nib.load(str(LITS)).dataobj, dtype=np.float32).transpose(2, 1, 0)[None]  # (1, D, H, W)

    def process(cid, g):
        write_array(g, "image", vol)
        g.attrs["spacing"] = [1.0, 1.0, 1.0]

    run_stage(StageRun("predict", d / "predict.h5", {"class_names": ["bg", "liver", "tumour"]}, ["lits117"],
                       quiet=True), process)
    torch.manual_seed(0)
    model = create_model("unet-small", in_channels=1, num_classes=3, dropout=0.2, channels=(4, 8, 16, 32))
    prep = Preprocessing("ct", 1, [64, 64], "stretch", 1.0, [-200.0, 300.0], [0.4], [0.3], 16)
    save_checkpoint(d / "seg.pt", model, Checkpoint(model.arch, model.init_args, prep, ["bg", "liver", "tumour"]))


def child_uqseg(d: Path, T: int) -> None:
    from tests.bayes.fixtures import run_cli

    os.chdir(d)
    for args in (("sample", "-m", "seg.pt", "--method", "mcdropout", "-T", str(T), "-o", f"s{T}.h5", "-q",
                  "--overwrite", "--device", "cpu"),
                 ("uncertainty", "-i", f"s{T}.h5", "-o", f"u{T}.h5", "-q", "--overwrite")):
        assert run_cli(*args) == 0


def child_stacked(d: Path, T: int) -> None:
    """What common toolkits do: keep every sample (T, K, D, H, W) float32, then compute the maps from it."""
    import numpy as np
    import torch

    from uqseg_cli.bayes.common import item_keys
    from uqseg_cli.bayes.mc_dropout import SeededDropout
    from uqseg_cli.io.store import StageFile
    from uqseg_cli.models.inference import Predictor

    with StageFile(d / "predict.h5") as pf:
        image = pf.case("lits117").get("image")
    pred = Predictor.from_checkpoint(d / "seg.pt", "cpu", 8)
    stack = np.zeros((T, 3, *image.shape[1:]), dtype=np.float32)
    with torch.no_grad(), SeededDropout(pred.model, 0) as sd:
        for chunk in pred.chunks(image):
            keys = item_keys(chunk.index, tuple(chunk.x.shape))
            for t in range(T):
                sd.set_batch([(t, k) for k in keys])
                stack[(t, slice(None), *chunk.index)] = pred.restore(pred.model(chunk.x)[None], chunk)[0].exp()
    mean = stack.mean(0)
    logp = np.log(stack + 1e-10)
    h = -(mean * np.log(mean + 1e-10)).sum(0)
    eh = -(stack * logp).sum(1).mean(0)
    _ = (mean.max(0), h, eh, np.maximum(h - eh, 0), -(mean * logp.mean(0)).sum(0) - eh)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, nargs="+", default=[5, 20, 50])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "DIR", "T"))
    a = ap.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        mode, d, T = a.child[0], Path(a.child[1]), int(a.child[2])
        t0 = time.perf_counter()
        (child_uqseg if mode == "uqseg" else child_stacked)(d, T)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"rss_mb": rss, "s": time.perf_counter() - t0}))
        return
    if not LITS.exists():
        sys.exit(f"needs {LITS}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        setup(d)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        base = subprocess.run([sys.executable, "-c", "import resource, torch, uqseg_cli.cli.app; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                              capture_output=True, text=True, env=env, check=True)
        print(f"# LiTS 117 (1x128^3), unet-small slice-wise, MC dropout; torch {__import__('torch').__version__}, "
              f"{a.threads} threads; RSS of a process that only imports torch + uqseg: {float(base.stdout):.0f} MB")
        print(f"{'T':>4} {'uqseg peak RSS (MB)':>20} {'s':>7} {'stacked peak RSS (MB)':>22} {'s':>7}")
        rows = {}
        for T in a.T:
            r = {}
            for mode in ("uqseg", "stacked"):
                out = subprocess.run([sys.executable, __file__, "--threads", str(a.threads), "--child", mode, tmp,
                                      str(T)], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    sys.exit(out.stderr)
                r[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            rows[T] = r
            print(f"{T:>4} {r['uqseg']['rss_mb']:>20.0f} {r['uqseg']['s']:>7.1f} {r['stacked']['rss_mb']:>22.0f} "
                  f"{r['stacked']['s']:>7.1f}")
        lo, hi = min(a.T), max(a.T)
        print(f"# peak RSS T={hi} / T={lo}: uqseg {rows[hi]['uqseg']['rss_mb'] / rows[lo]['uqseg']['rss_mb']:.2f}x, "
              f"stacked {rows[hi]['stacked']['rss_mb'] / rows[lo]['stacked']['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
