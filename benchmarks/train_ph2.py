"""Train a segmenter on the shared PH2 cases (validation held out) and compare with the DESIGN §7 prototype.

Runs `uqseg_cli.training.train_members` (what `uqseg train` runs) for each requested epoch budget and prints mean
validation Dice, wall and CPU time, side by side with the prototype numbers of DESIGN §7 (resnet18-FPN from
scratch at 256x192 on 2 CPU cores: 0.87 after 3 epochs in ~40 s, 0.92 after 25 epochs in ~5.5 min), with ratios.

    python benchmarks/train_ph2.py --arch fpn-resnet18 --epochs 3 25 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from uqseg_cli.io.cases import discover_cases, load_case  # noqa: E402
from uqseg_cli.training.loop import TrainOptions, train_members  # noqa: E402

PROTOTYPE = {3: (0.87, 40.0), 25: (0.92, 330.0)}  # epochs: (val Dice, seconds), DESIGN §7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "ph2")
    ap.add_argument("--arch", default="fpn-resnet18")
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 25])
    ap.add_argument("--input-size", default="192x256")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="save the last model as a checkpoint here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = discover_cases(args.data / "images", masks=args.data / "masks")
    cases = [load_case(s) for s in specs]
    size = [int(v) for v in args.input_size.split("x")]
    results = []
    for epochs in args.epochs:
        opts = TrainOptions(arch=args.arch, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                            input_size=size, val_fraction=0.2, seed=args.seed)
        curve = []

        def on_epoch(r, curve=curve, epochs=epochs):
            curve.append({"epoch": r.epoch, "val_dice": r.val_dice, "loss": r.train_loss, "seconds": r.seconds})
            print(f"  {args.arch} {epochs} ep: epoch {r.epoch} loss {r.train_loss:.4f} val Dice {r.val_dice:.4f} "
                  f"({r.seconds:.1f} s)", flush=True)

        t0, c0 = time.perf_counter(), time.process_time()
        (member,) = list(train_members(cases, opts, torch.device("cpu"), on_epoch))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if args.save:
            from uqseg_cli.models.checkpoint import save_checkpoint

            save_checkpoint(args.save, member.model, member.meta)
        results.append({"arch": args.arch, "epochs": epochs, "input_size": size, "lr": args.lr,
                        "train_cases": len(member.meta.train_case_ids), "val_cases": len(member.meta.val_case_ids),
                        "best_val_dice": member.meta.val_dice, "best_epoch": member.meta.best_epoch,
                        "wall_s": wall, "cpu_s": cpu, "threads": args.threads, "curve": curve})
    print(f"\nPH2, {results[0]['train_cases']} train / {results[0]['val_cases']} validation cases, "
          f"torch {torch.__version__}, {args.threads} thread(s); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"{'arch':<14}{'epochs':>7}{'val Dice':>10}{'wall s':>9}{'cpu s':>9}   prototype (Dice, s)   Dice diff"
          "   time ratio")
    for r in results:
        proto = PROTOTYPE.get(r["epochs"])
        ref = f"{proto[0]:.2f}, {proto[1]:.0f}" if proto else "-"
        diff = f"{r['best_val_dice'] - proto[0]:+.3f}" if proto else "-"
        ratio = f"{r['wall_s'] / proto[1]:.2f}x" if proto else "-"
        print(f"{r['arch']:<14}{r['epochs']:>7}{r['best_val_dice']:>10.4f}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}"
              f"   {ref:<20}{diff:>10}{ratio:>13}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
