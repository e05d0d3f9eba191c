"""Throughput at dataset scale (issue 15): every stage of the real CLI on N ISIC cases, next to the model's own cost
and next to what a user would write by hand.

Per stage (each a fresh `uqseg` process): wall seconds, cases/s, peak RSS (the child's own VmHWM), output size on
disk, and the **model-forward share**: the time of exactly the forwards the stage runs (same model, same batch
shapes, same thread count), in a bare loop on random inputs, measured in the same run (`--child bare`). The
start-up of each stage (imports, checkpoint) is measured by rerunning it on its finished output (it loads
everything, then finds nothing to do).

Hand-written loops (fresh processes too): `hand-predict` (PIL load, normalise, one forward, softmax, argmax,
`np.save` per case) and `hand-tta` / `hand-mcdropout` (PIL load, T forwards (TTA: the 8 flips/rotations in one
batch; MC dropout: T full passes with dropout on), stack, mean, numpy entropy, `np.save` per case). Their outputs
are checked against predict.h5 / samples.h5 / uncertainty.h5 (max |difference|).

    python benchmarks/bench_pipeline.py --cases 100 500 --threads 1 --work /tmp/bench-pipeline
    python benchmarks/bench_pipeline.py --lits --threads 1 --work /tmp/bench-pipeline

Results go to stdout (markdown) and `<work>/results-<N>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
ISIC = DATA / "isic2017"
LITS = DATA / "lits117"

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


def _env(threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(argv: list[str], threads: int, *, python_code: str = CHILD) -> dict:
    """Run one fresh process; wall seconds, peak RSS (MiB) and the JSON line it printed (if any)."""
    cmd = [sys.executable, "-c", python_code, *argv]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[:3])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    kib = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM")]
    out = {"wall": wall, "cpu": cpu, "rss_mib": kib[-1] / 1024 if kib else float("nan")}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out["json"] = json.loads(line)
    return out


def uqseg(args: list[str], threads: int) -> dict:
    return run_child(args, threads)


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def write_manifest(n: int, path: Path, start: int = 0) -> list[str]:
    ids = sorted(p.stem for p in (ISIC / "images").glob("*.jpg"))[start : start + n]
    with path.open("w") as fh:
        fh.write("case,image,mask\n")
        for c in ids:
            fh.write(f"{c},{ISIC / 'images' / (c + '.jpg')},{ISIC / 'masks' / (c + '.png')}\n")
    return ids


# -- children: bare forward loops and hand-written loops ----------------------------------------------------------
BARE = r"""
import json, sys, time, torch
sys.argv = sys.argv[1:]
from uqseg_cli.models.checkpoint import load_checkpoint
from uqseg_cli.bayes.mc_dropout import sample_mc_dropout
ckpt, n, T, mc_T, maxb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
model, meta = load_checkpoint(ckpt)
model.eval()
h, w = meta.preprocessing.input_size
g = torch.Generator().manual_seed(0)
xs = [torch.randn(1, meta.preprocessing.channels, h, w, generator=g) for _ in range(min(n, 16))]
out = {}
with torch.no_grad():
    model(xs[0])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        model(xs[i % len(xs)])
    out["predict"], out["predict_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        x = xs[i % len(xs)]
        for s in range(0, T, maxb):
            model(torch.cat([x] * min(maxb, T - s), 0))
    out["tta"], out["tta_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    # MC dropout as the sampler runs it (encoder once, decoder on repeated features, batches of maxb)
    from uqseg_cli.bayes.mc_dropout import can_cache_encoder
    cached = can_cache_encoder(model)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        x = xs[i % len(xs)]
        if cached:
            f = model.encode(x)
            for s in range(0, mc_T, maxb):
                model.decode(model.repeat_features(f, min(maxb, mc_T - s)))
        else:
            for s in range(0, mc_T, maxb):
                model(torch.cat([x] * min(maxb, mc_T - s), 0))
    out["mcdropout"], out["mcdropout_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    # the hand-written MC dropout loop's forwards: mc_T full passes
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n if int(sys.argv[6]) else 0):
        x = xs[i % len(xs)]
        for s in range(0, mc_T, maxb):
            model(torch.cat([x] * min(maxb, mc_T - s), 0))
    out["mc_full"], out["mc_full_cpu"] = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps(out))
"""

HAND = r"""
import json, sys, time
import numpy as np, torch
from pathlib import Path
from PIL import Image
sys.argv = sys.argv[1:]
mode, manifest, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]
outdir, T, maxb = Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
from uqseg_cli.models.checkpoint import load_checkpoint
model, meta = load_checkpoint(ckpt)
model.eval()
prep = meta.preprocessing
mean = torch.tensor(prep.mean, dtype=torch.float32).view(-1, 1, 1)
std = torch.tensor(prep.std, dtype=torch.float32).view(-1, 1, 1)
outdir.mkdir(parents=True, exist_ok=True)
rows = [l.split(",") for l in Path(manifest).read_text().splitlines()[1:]]

def flips():  # the 8 flips / quarter turns of the square, with their inverses
    out = []
    for k in range(4):
        out.append((lambda x, k=k: torch.rot90(x, k, (-2, -1)), lambda y, k=k: torch.rot90(y, -k, (-2, -1))))
        out.append((lambda x, k=k: torch.rot90(torch.flip(x, (-1,)), k, (-2, -1)),
                    lambda y, k=k: torch.flip(torch.rot90(y, -k, (-2, -1)), (-1,))))
    return out

TF = flips()
if mode == "mcdropout":
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Dropout3d)):
            m.train()
t0, c0 = time.perf_counter(), time.process_time()
with torch.no_grad():
    for cid, img_path, _mask in rows:
        img = np.asarray(Image.open(img_path).convert("RGB"))
        x = ((torch.from_numpy(img).permute(2, 0, 1).float() / 255.0 - mean) / std)[None]
        if mode == "predict":
            p = torch.softmax(model(x), 1)[0].numpy()
            np.save(outdir / f"{cid}.prob.npy", p.astype(np.float16))
            np.save(outdir / f"{cid}.seg.npy", p.argmax(0).astype(np.uint8))
            continue
        probs = []
        for s in range(0, T, maxb):
            n = min(maxb, T - s)
            if mode == "tta":
                batch = torch.cat([TF[t][0](x) for t in range(s, s + n)], 0)
                logits = model(batch)
                probs += [torch.softmax(TF[t][1](logits[i : i + 1]), 1)[0] for i, t in enumerate(range(s, s + n))]
            else:
                logits = model(torch.cat([x] * n, 0))
                probs += list(torch.softmax(logits, 1))
        stack = torch.stack(probs).numpy().astype(np.float64)  # (T, K, H, W)
        pbar = stack.mean(0)
        ent = -(pbar * np.log(np.clip(pbar, 1e-300, None))).sum(0)
        np.save(outdir / f"{cid}.mean.npy", pbar.astype(np.float32))
        np.save(outdir / f"{cid}.entropy.npy", ent.astype(np.float32))
print(json.dumps({"loop": time.perf_counter() - t0, "loop_cpu": time.process_time() - c0}))
"""


def hand(mode: str, manifest: Path, ckpt: Path, outdir: Path, T: int, maxb: int, threads: int) -> dict:
    code = _hwm_prefix() + HAND
    return run_child(["x", mode, str(manifest), str(ckpt), str(outdir), str(T), str(maxb)], threads,
                     python_code=code)


def bare(ckpt: Path, n: int, T: int, mc_T: int, maxb: int, threads: int, mc_full: bool) -> dict:
    code = _hwm_prefix() + BARE
    return run_child(["x", str(ckpt), str(n), str(T), str(mc_T), str(maxb), str(int(mc_full))], threads,
                     python_code=code)


def _hwm_prefix() -> str:
    return CHILD.split("from uqseg_cli.cli.app")[0]


# -- agreement ---------------------------------------------------------------------------------------------------
def agreement(work: Path, ids: list[str], method: str, T: int, hand_dir: Path, samples: Path, unc: Path) -> dict:
    import h5py
    import numpy as np

    dm = de = 0.0
    with h5py.File(samples, "r") as s, h5py.File(unc, "r") as u:
        for cid in ids:
            mean = np.load(hand_dir / f"{cid}.mean.npy")
            ent = np.load(hand_dir / f"{cid}.entropy.npy")
            dm = max(dm, float(np.abs(s[f"cases/{cid}/{method}/sum_p"][()] / T - mean).max()))
            de = max(de, float(np.abs(u[f"cases/{cid}/{method}/entropy"][()] - ent).max()))
    return {"max_abs_mean_p": dm, "max_abs_entropy": de}


def agreement_predict(ids: list[str], hand_dir: Path, predict: Path) -> dict:
    import h5py
    import numpy as np

    dp, seg = 0.0, 0
    with h5py.File(predict, "r") as f:
        for cid in ids:
            p = np.load(hand_dir / f"{cid}.prob.npy").astype(np.float32)
            dp = max(dp, float(np.abs(f[f"cases/{cid}/probabilities"][()].astype(np.float32) - p).max()))
            seg += int((f[f"cases/{cid}/segmentation"][()] != np.load(hand_dir / f"{cid}.seg.npy")).sum())
    return {"max_abs_prob_float16": dp, "segmentation_voxels_differing": seg}


# -- one dataset size ---------------------------------------------------------------------------------------------
def bench_isic(n: int, args) -> dict:
    work = args.work / f"isic{n}"
    work.mkdir(parents=True, exist_ok=True)
    th = args.threads
    man = work / "cases.csv"
    ids = write_manifest(n, man)
    ckpt = args.work / "seg.pt"
    res: dict = {"cases": n, "threads": th, "T_tta": 8, "T_mc": args.mc_T, "stages": {}}
    st = res["stages"]

    def stage(name: str, argv: list[str], out: Path, restart: list[str] | None = None) -> None:
        r = uqseg(argv, th)
        r["size_mb"] = size_of(out) / 1e6
        if restart is not None:  # rerun on the finished output: imports + checkpoint, no cases
            again = uqseg(restart, th)
            r["startup"], r["startup_cpu"] = again["wall"], again["cpu"]
        st[name] = r
        print(f"  {name:<22} {r['wall']:7.1f} s (cpu {r['cpu']:6.1f} s)  {n / r['wall']:6.2f} cases/s  "
              f"{r['rss_mib']:7.0f} MiB  "
              f"{r['size_mb']:8.1f} MB  start-up {r.get('startup', float('nan')):.1f} s (cpu "
              f"{r.get('startup_cpu', float('nan')):.1f} s)", flush=True)

    if "train" in args.stages:
        stage("train (1 epoch)", ["train", "-i", str(man), "-m", args.arch, "--epochs", "1", "--val-fraction", "0",
                                  "--threads", str(th), "-o", str(work / "train.pt"), "-q", "--overwrite"],
              work / "train.pt")
    p = work / "predict.h5"
    argv = ["predict", "-i", str(man), "-m", str(ckpt), "-o", str(p), "--raters", str(ISIC / "masks"),
            "--threads", str(th), "-q"]
    stage("predict", argv + ["--overwrite"], p, argv)
    s_tta, s_mc = work / "samples_tta.h5", work / "samples_mc.h5"
    argv = ["sample", "-i", str(p), "-m", str(ckpt), "--method", "tta", "-T", "8", "-o", str(s_tta), "-q"]
    stage("sample tta T=8", argv + ["--overwrite"], s_tta, argv)
    u_tta, u_mc = work / "unc_tta.h5", work / "unc_mc.h5"
    if not args.skip_mc:
        argv = ["sample", "-i", str(p), "-m", str(ckpt), "--method", "mcdropout", "-T", str(args.mc_T), "-o",
                str(s_mc), "-q"]
        stage(f"sample mcdropout T={args.mc_T}", argv + ["--overwrite"], s_mc, argv)
    argv = ["uncertainty", "-i", str(s_tta), "-o", str(u_tta), "-q"]
    stage("uncertainty (tta)", argv + ["--overwrite"], u_tta, argv)
    if not args.skip_mc:
        argv = ["uncertainty", "-i", str(s_mc), "-o", str(u_mc), "-q"]
        stage("uncertainty (mcdropout)", argv + ["--overwrite"], u_mc, argv)
    if "aggregate" in args.stages:
        f = work / "features.csv"
        stage("aggregate", ["aggregate", "-i", str(u_tta), "-o", str(f), "-q", "--overwrite"], f)
        if "score" in args.stages:
            sc = work / "scores.csv"
            stage("score (features, cv 5)", ["score", "-i", str(u_tta), "--features", str(f), "--framework",
                                             "features", "--cv", "5", "-o", str(sc), "--save-model",
                                             str(work / "quality.pt"), "-q", "--overwrite"], sc)
    if "evaluate" in args.stages:
        m = work / "metrics.csv"
        stage("evaluate (tta)", ["evaluate", "-i", str(s_tta), "-o", str(m), "-q", "--overwrite"], m)

    # the model's own cost, same run
    nb = min(n, args.bare_cases or n)  # forwards cost the same for every case: a subset may stand for all
    b = bare(ckpt, nb, 8, args.mc_T, 8, th, "mcdropout" in args.hand)
    res["bare"] = {k: v * n / nb for k, v in b["json"].items()}
    res["bare_cases"] = nb
    b["json"] = res["bare"]
    print(f"  bare forwards (cpu s): {json.dumps({k: round(v, 1) for k, v in b['json'].items()})}", flush=True)
    # hand-written loops
    hd = {}
    for mode, T in (("predict", 1), ("tta", 8), ("mcdropout", args.mc_T)):
        if mode not in args.hand:
            continue
        out = work / f"hand_{mode}"
        r = hand(mode, man, ckpt, out, T, 8, th)
        r["size_mb"] = size_of(out) / 1e6
        hd[mode] = r
        print(f"  hand {mode:<10} {r['wall']:7.1f} s (cpu {r['cpu']:.1f} s; loop {r['json']['loop']:.1f} s, cpu "
              f"{r['json']['loop_cpu']:.1f} s)  {r['rss_mib']:7.0f} MiB  "
              f"{r['size_mb']:8.1f} MB", flush=True)
    res["hand"] = hd
    res["agree"] = {}
    if "predict" in args.hand:
        res["agree"]["predict"] = agreement_predict(ids, work / "hand_predict", p)
    if "tta" in args.hand:
        res["agree"]["tta"] = agreement(work, ids, "tta", 8, work / "hand_tta", s_tta, u_tta)
    print(f"  agreement {json.dumps(res['agree'])}", flush=True)
    (args.work / f"results-{n}.json").write_text(json.dumps(res, indent=1))
    return res


def bench_lits(args) -> dict:
    work = args.work / "lits"
    work.mkdir(parents=True, exist_ok=True)
    th = args.threads
    img, lab = LITS / "img_117.nii.gz", LITS / "lab_117.nii.gz"
    ckpt = work / "ct.pt"
    res: dict = {"stages": {}}
    st = res["stages"]

    def stage(name, argv, out):
        r = uqseg(argv, th)
        r["size_mb"] = size_of(out) / 1e6
        st[name] = r
        print(f"  {name:<26} {r['wall']:7.1f} s  {r['rss_mib']:7.0f} MiB  {r['size_mb']:8.1f} MB", flush=True)

    if not ckpt.exists():
        uqseg(["train", "-i", str(img), "--masks", str(lab), "-m", args.arch, "--epochs", "1", "--val-fraction", "0",
               "--input-size", "128x128", "--threads", str(th), "-o", str(ckpt), "-q", "--overwrite"], th)
    p = work / "predict.h5"
    stage("predict", ["predict", "-i", str(img), "--masks", str(lab), "--raters", str(lab), "-m", str(ckpt), "-o",
                      str(p), "--batch-size", "8", "--threads", str(th), "-q", "--overwrite"], p)
    s = work / "samples.h5"
    stage(f"sample tta+mcdropout T=8/{args.mc_T}", ["sample", "-i", str(p), "-m", str(ckpt), "--method",
                                                    "tta,mcdropout", "-T", str(args.mc_T), "-o", str(s), "-q",
                                                    "--overwrite"], s)
    u = work / "uncertainty.h5"
    stage("uncertainty", ["uncertainty", "-i", str(s), "-o", str(u), "-q", "--overwrite"], u)
    m = work / "metrics.csv"
    stage("evaluate", ["evaluate", "-i", str(s), "-o", str(m), "-q", "--overwrite"], m)
    (args.work / "results-lits.json").write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="*", default=[100])
    ap.add_argument("--lits", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arch", default="fpn-resnet18")
    ap.add_argument("--mc-T", type=int, default=20)
    ap.add_argument("--stages", default="train,aggregate,score,evaluate",
                    help="optional stages besides predict/sample/uncertainty")
    ap.add_argument("--hand", default="predict,tta,mcdropout",
                    help="hand-written loops to run (mcdropout also times T full passes in the bare loop)")
    ap.add_argument("--bare-cases", type=int, default=0,
                    help="time the bare forwards on this many cases and scale to all (0 = all cases)")
    ap.add_argument("--skip-mc", action="store_true", help="leave out sample/uncertainty with MC dropout")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-pipeline"))
    ap.add_argument("--report", type=Path, nargs="*", help="print markdown tables from results-*.json and exit")
    ap.add_argument("--startup-cpu", type=Path, help="results json whose start-up CPU seconds fill in missing ones")
    args = ap.parse_args()
    if args.report:
        su = {}
        if args.startup_cpu:
            su = {k: v["startup_cpu"] for k, v in json.loads(args.startup_cpu.read_text())["stages"].items()
                  if "startup_cpu" in v}
        report(args.report, su)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if not ISIC.exists():
        raise SystemExit(f"{ISIC}: not found (the benchmark needs ../shared/data)")
    ckpt = args.work / "seg.pt"
    if not ckpt.exists():  # the segmenter: 1 epoch on 64 cases outside the benchmark's first 2,000 - 64
        man = args.work / "train64.csv"
        write_manifest(64, man, start=1900)
        print("training the benchmark's segmenter (1 epoch, 64 cases) ...", flush=True)
        uqseg(["train", "-i", str(man), "-m", args.arch, "--epochs", "1", "--val-fraction", "0", "--threads",
               str(args.threads), "-o", str(ckpt), "-q"], args.threads)
    import platform

    import h5py
    import numpy
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, h5py "
          f"{h5py.__version__}, load {os.getloadavg()[0]:.1f}", flush=True)
    for n in args.cases:
        print(f"\n== ISIC 2017, {n} cases, {args.arch}, {args.threads} thread(s) ==", flush=True)
        bench_isic(n, args)
    if args.lits:
        print("\n== LiTS 117 (128^3) ==", flush=True)
        bench_lits(args)


# -- report: markdown tables from results-*.json ------------------------------------------------------------------
STAGE_BARE = {"predict": "predict", "sample tta T=8": "tta", "sample mcdropout T=20": "mcdropout"}


def report(paths: list[Path], startup_cpu: dict[str, float]) -> None:
    """Print the per-stage and hand-loop tables. ``startup_cpu``: stage → CPU s of a run with nothing to do, for
    results that lack it (measured in another run of the same code)."""
    runs = [json.loads(p.read_text()) for p in paths]
    print("| stage | cases | wall s | CPU s | start-up CPU s | CPU ms/case (w/o start-up) | model forwards CPU "
          "ms/case | model share | peak RSS MiB | output MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        n = r["cases"]
        for name, st in r["stages"].items():
            su = st.get("startup_cpu", startup_cpu.get(name, float("nan")))
            per = 1e3 * (st["cpu"] - su) / n if su == su else float("nan")
            key = STAGE_BARE.get(name)
            fwd = 1e3 * r["bare"].get(f"{key}_cpu", float("nan")) / n if key else float("nan")
            share = f"{fwd / per:.0%}" if key and per == per else "–"
            print(f"| {name} | {n} | {st['wall']:.1f} | {st['cpu']:.1f} | {su:.1f} | {per:.0f} | "
                  f"{fwd:.0f} | {share} | {st['rss_mib']:.0f} | {st['size_mb']:.1f} |".replace("| nan |", "| – |"))
    for r in runs:
        n, st, hd = r["cases"], r["stages"], r.get("hand", {})
        if not hd:
            continue
        print(f"\n{n} cases: pipeline (fresh processes, CPU s incl. start-up) vs the hand-written loop")
        print("| job | uqseg CPU s | hand CPU s | uqseg / hand | per case w/o start-up: uqseg / hand ms | ratio | "
              "uqseg peak RSS MiB | hand peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        combos = {
            "predict": (["predict"], "predict"),
            "predict + sample tta + uncertainty": (["predict", "sample tta T=8", "uncertainty (tta)"], "tta"),
            f"predict + sample mcdropout T={r['T_mc']} + uncertainty": (
                ["predict", f"sample mcdropout T={r['T_mc']}", "uncertainty (mcdropout)"], "mcdropout"),
        }
        for job, (stages, h) in combos.items():
            if h not in hd or not all(s in st for s in stages):
                continue
            u = sum(st[s]["cpu"] for s in stages)
            su = sum(st[s].get("startup_cpu", startup_cpu.get(s, float("nan"))) for s in stages)
            rss = max(st[s]["rss_mib"] for s in stages)
            pu, ph = 1e3 * (u - su) / n, 1e3 * hd[h]["json"]["loop_cpu"] / n
            print(f"| {job} | {u:.1f} | {hd[h]['cpu']:.1f} | {u / hd[h]['cpu']:.2f}x | {pu:.0f} / {ph:.0f} | "
                  f"{pu / ph:.2f}x | {rss:.0f} | {hd[h]['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
