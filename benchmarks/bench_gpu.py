"""GPU timing of `uqseg predict` / `sample` (fpn-resnet50, 512x512, T = 20) with CPU/GPU agreement; run by gpu.sh.

Synthetic photos (random texture with a bright disk), random weights (time does not depend on their values).
Each stage is a fresh `uqseg` process on the GPU; the bare forward loop (same forwards, CUDA-synchronised) gives
the model's share. Agreement: two cases also go through predict and TTA sampling on the CPU; the script prints
the largest |difference| of the probabilities and of the TTA mean (float32, autocast off).

    python benchmarks/bench_gpu.py [--cases 64] [--work /tmp/uqseg-gpu]
Exits 0 with a skip message when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def uqseg(*args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "uqseg_cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"uqseg {' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def write_cases(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.25)]
        disk = (yy / size - cy) ** 2 + (xx / size - cx) ** 2 < r**2
        img = rng.integers(0, 90, (size, size, 3)) + 140 * disk[..., None]
        Image.fromarray(img.astype(np.uint8)).save(folder / "images" / f"g{i:03d}.png")
        Image.fromarray((disk * 255).astype(np.uint8)).save(folder / "masks" / f"g{i:03d}.png")


def make_checkpoint(path: Path, size: int) -> None:
    from uqseg_cli.models import create_model
    from uqseg_cli.models.checkpoint import Checkpoint, save_checkpoint
    from uqseg_cli.models.preprocessing import Preprocessing

    torch.manual_seed(0)
    model = create_model("fpn-resnet50", 3, 2, 0.2)
    prep = Preprocessing("photo", 3, [size, size], "stretch", 255.0, None, [0.5] * 3, [0.25] * 3)
    save_checkpoint(path, model, Checkpoint("fpn-resnet50", model.init_args, prep, ["background", "lesion"]))


def bare(ckpt: Path, n: int, T: int, batch: int, amp: bool, dev: str = "cuda") -> dict:
    from uqseg_cli.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(ckpt, map_location=dev)
    model = model.to(dev).eval()
    h, w = meta.preprocessing.input_size
    x = torch.randn(1, 3, h, w, device=dev)
    cuda = dev.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp and cuda):
        model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            model(x)
        sync()
        out["predict"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            for s in range(0, T, batch):
                model(x.expand(min(batch, T - s), -1, -1, -1))
        sync()
        out["tta"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            f = model.encode(x)
            for s in range(0, T, batch):
                model.decode(model.repeat_features(f, min(batch, T - s)))
        sync()
        out["mcdropout"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("-T", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("/tmp/uqseg-gpu"))
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script)")
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: SKIP - torch sees no CUDA device; nothing timed")
        return
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    write_cases(w / "all", args.cases, args.size)
    write_cases(w / "two", 2, args.size)  # the same first two cases (same seed), for the CPU side
    ckpt = w / "seg.pt"
    make_checkpoint(ckpt, args.size)
    n, T, bs = args.cases, args.T, str(args.batch_size)
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else dev
    res = {"device": name, "torch": torch.__version__, "cases": n, "T": T, "size": args.size}
    common = ["-m", str(ckpt), "-q", "--overwrite", "--batch-size", bs]
    inp = ["-i", str(w / "all" / "images"), "--masks", str(w / "all" / "masks")]
    res["predict_gpu_fp32"] = uqseg("predict", *inp, "-o", str(w / "p32.h5"), "--device", dev, "--no-amp",
                                    "--prob-dtype", "float32", *common)
    res["predict_gpu_amp"] = uqseg("predict", *inp, "-o", str(w / "pamp.h5"), "--device", dev, "--amp", *common)
    for m in ("tta", "mcdropout"):
        extra = ["--tta-intensity", "0.1"] if m == "tta" else []
        res[f"sample_{m}_gpu_fp32"] = uqseg("sample", "-i", str(w / "p32.h5"), "-o", str(w / f"s_{m}.h5"),
                                            "--method", m, "-T", str(T), "--device", dev, "--no-amp", *extra,
                                            *common)
        res[f"sample_{m}_gpu_amp"] = uqseg("sample", "-i", str(w / "p32.h5"), "-o", str(w / f"s_{m}_amp.h5"),
                                           "--method", m, "-T", str(T), "--device", dev, "--amp", *extra, *common)
    res["uncertainty"] = uqseg("uncertainty", "-i", str(w / "s_tta.h5"), "-o", str(w / "u.h5"), "-q", "--overwrite")
    res["bare_fp32"] = bare(ckpt, n, T, args.batch_size, amp=False, dev=dev)
    res["bare_amp"] = bare(ckpt, n, T, args.batch_size, amp=True, dev=dev)
    # CPU / GPU agreement on two cases
    two = ["-i", str(w / "two" / "images"), "--masks", str(w / "two" / "masks")]
    uqseg("predict", *two, "-o", str(w / "pcpu.h5"), "--device", "cpu", "--prob-dtype", "float32", *common)
    uqseg("sample", "-i", str(w / "pcpu.h5"), "-o", str(w / "scpu.h5"), "--method", "tta", "-T", str(T),
          "--tta-intensity", "0.1", "--device", "cpu", *common)
    import h5py

    dp = dm = 0.0
    with h5py.File(w / "p32.h5") as g, h5py.File(w / "pcpu.h5") as c, h5py.File(w / "s_tta.h5") as gs, \
            h5py.File(w / "scpu.h5") as cs:
        for cid in c["cases"]:
            dp = max(dp, float(np.abs(g[f"cases/{cid}/probabilities"][()] - c[f"cases/{cid}/probabilities"][()]).max()))
            dm = max(dm, float(np.abs(gs[f"cases/{cid}/tta/sum_p"][()] - cs[f"cases/{cid}/tta/sum_p"][()]).max()) / T)
    res["cpu_gpu_max_abs_prob"] = dp
    res["cpu_gpu_max_abs_tta_mean"] = dm
    print(json.dumps(res, indent=1))
    for k in ("predict", "tta", "mcdropout"):
        stage = {"predict": "predict_gpu_fp32", "tta": "sample_tta_gpu_fp32", "mcdropout": "sample_mcdropout_gpu_fp32"}
        print(f"{k}: stage {res[stage[k]]:.1f} s (incl. start-up) vs bare forwards {res['bare_fp32'][k]:.1f} s "
              f"({n / res[stage[k]]:.1f} vs {n / res['bare_fp32'][k]:.1f} cases/s)")
    ok = dp < 1e-3 and dm < 1e-3
    print(f"CPU/GPU agreement: probabilities {dp:.2e}, TTA mean {dm:.2e} -> {'OK' if ok else 'DIFFERENT'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
