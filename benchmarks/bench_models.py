"""Model speed and predict cost on this machine, each next to a peer path, with ratios.

1. Training step (forward + backward + AdamW) at 256x256, batch 4: every 2D model of the registry, next to the
   same step on its timm encoder alone (the peer: what the backbone costs without our decoder) -> images/s and
   the decoder overhead ratio.
2. `uqseg predict` on the LiTS 128^3 volume (real CLI, one fresh process per run, wall time and the process's
   peak RSS, VmHWM): fpn-resnet18 slice-wise with --batch-size 16 next to the naive --batch-size 1; unet3d-small on one
   128^3 tile next to 64^3 tiles with a 16-voxel halo (32^3 cores: 64 tiles).
   Weights are random: time and memory do not depend on their values.

    python benchmarks/bench_models.py --threads 2 [--skip-train] [--skip-predict]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from uqseg_cli.models import create_model  # noqa: E402
from uqseg_cli.models.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from uqseg_cli.models.inference import tile_axis  # noqa: E402
from uqseg_cli.models.preprocessing import Preprocessing  # noqa: E402
from uqseg_cli.training.loop import dice_ce_loss  # noqa: E402


class EncoderOnly(torch.nn.Module):
    """The encoder of a registry model alone (timm backbone, or the U-Net's contracting path)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        run = getattr(self.model, "_encoder", None) or self.model.backbone
        return list(run(x))


def step_time(module, x, y, repeats: int, loss_fn) -> float:
    """Fastest of ``repeats`` forward + backward + AdamW steps (after one warm-up step): on a CPU shared with other
    jobs the minimum is the least disturbed measurement (as in ``timeit``)."""
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss = loss_fn(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return min(times)


def bench_train(batch: int, repeats: int) -> None:
    print(f"\n== training step at 256x256, batch {batch} (fastest of {repeats}) ==")
    print(f"{'model':<14}{'params':>9}{'img/s':>9}{'encoder img/s':>15}{'full/encoder time':>19}")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 256, 256)
    y = torch.randint(0, 2, (batch, 256, 256))
    for name in ("unet-small", "fpn-resnet18", "fpn-resnet50", "swin-unet"):
        model = create_model(name)
        t_full = step_time(model, x, y, repeats, dice_ce_loss)
        enc_mod = EncoderOnly(model)
        t_enc = step_time(enc_mod, x, y, repeats, lambda f, _y: sum(t.float().mean() for t in f))
        print(f"{name:<14}{model.num_parameters() / 1e6:>8.2f}M{batch / t_full:>9.2f}{batch / t_enc:>15.2f}"
              f"{t_full / t_enc:>18.2f}x", flush=True)


CHILD = (
    "import atexit, sys\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('VMHWM', int(line.split()[1]), file=sys.stderr)\n"
    "atexit.register(hwm)\n"
    "from uqseg_cli.cli.app import main\n"
    "sys.argv = ['uqseg', *sys.argv[1:]]\n"
    "main()\n"
)


def run_predict(args: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, the child's own VmHWM: ru_maxrss would count the forked parent) of one
    `uqseg predict` process."""
    cmd = [sys.executable, "-c", CHILD, "predict", *args, "--threads", str(threads), "-q", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"predict failed: {proc.stderr}")
    kib = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM")]
    return wall, kib[-1] / 1024


def run_predict_baseline(threads: int) -> tuple[float, float]:
    """The same measurement for a process that only imports torch and timm (`uqseg models`)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "models"], cwd=REPO, capture_output=True, text=True)
    kib = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM")]
    return time.perf_counter() - t0, kib[-1] / 1024


def ct_checkpoint(path: Path, arch: str, size: list[int], halo: int = 16) -> Path:
    torch.manual_seed(0)
    model = create_model(arch, in_channels=1, num_classes=3)
    prep = Preprocessing("ct", 1, size, "stretch", 1.0, [-200.0, 300.0], [0.4], [0.3], halo)
    return save_checkpoint(path, model, Checkpoint(arch, model.init_args, prep, ["background", "liver", "tumour"]))


def bench_predict(data: Path, threads: int) -> None:
    img, lab = data / "img_117.nii.gz", data / "lab_117.nii.gz"
    if not img.exists():
        print(f"\n(LiTS volume not found at {img}; predict benchmark skipped)")
        return
    print("\n== uqseg predict on LiTS 117 (128^3), one fresh process per run ==")
    print(f"{'configuration':<52}{'wall s':>8}{'peak RSS MiB':>14}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r18 = ct_checkpoint(tmp / "r18.pt", "fpn-resnet18", [128, 128])
        u3a = ct_checkpoint(tmp / "u3_128.pt", "unet3d-small", [128, 128, 128])
        u3b = ct_checkpoint(tmp / "u3_64.pt", "unet3d-small", [64, 64, 64], halo=16)
        n_tiles = len(tile_axis(128, 64, 16, 8)) ** 3
        base = ["-i", str(img), "--masks", str(lab), "-o", str(tmp / "p.h5")]
        rows = [
            ("fpn-resnet18 slice-wise, --batch-size 16", [*base, "-m", str(r18), "--batch-size", "16"]),
            ("fpn-resnet18 slice-wise, --batch-size 1 (naive)", [*base, "-m", str(r18), "--batch-size", "1"]),
            ("unet3d-small, one 128^3 tile", [*base, "-m", str(u3a)]),
            (f"unet3d-small, 64^3 tiles + 16 halo ({n_tiles} tiles)", [*base, "-m", str(u3b)]),
        ]
        base_wall, base_rss = run_predict_baseline(threads)
        print(f"{'baseline: `uqseg models` (torch + timm imported)':<52}{base_wall:>8.1f}{base_rss:>14.0f}{'':>8}")
        results = [(label, *run_predict(a, threads)) for label, a in rows]
        for i, (label, wall, rss) in enumerate(results):
            ref = results[i - 1][1] if i % 2 else wall
            print(f"{label:<52}{wall:>8.1f}{rss:>14.0f}{wall / ref:>7.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "lits117")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at start")
    if not args.skip_train:
        bench_train(args.batch, args.repeats)
    if not args.skip_predict:
        bench_predict(args.data, args.threads)


if __name__ == "__main__":
    main()
