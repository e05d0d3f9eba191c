"""Small predict.h5 files and checkpoints for the sample/uncertainty command tests (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.helpers import run_cli  # noqa: F401  (re-exported for the tests)
from uqseg_cli.io.runner import StageRun, run_stage
from uqseg_cli.io.store import write_array
from uqseg_cli.models import create_model
from uqseg_cli.models.checkpoint import Checkpoint, member_path, save_checkpoint
from uqseg_cli.models.preprocessing import Preprocessing

CLASSES = ["background", "organ", "lesion"]


def make_checkpoint(path: Path, *, dims: int = 2, seed: int = 0, dropout: float = 0.3, member: int = 0,
                    members: int = 1, train_ids=(), mean: float = 0.4, std: float = 0.3) -> Path:
    """A tiny U-Net (random weights, non-trivial batch-norm statistics) for 1-channel CT with 3 classes."""
    torch.manual_seed(seed)
    arch, channels = ("unet-small", (4, 8, 8)) if dims == 2 else ("unet3d-small", (4, 8))
    model = create_model(arch, in_channels=1, num_classes=3, dropout=dropout, channels=channels).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    size = [16, 16] if dims == 2 else [8, 16, 16]
    prep = Preprocessing("ct", 1, size, "stretch", 1.0, [-100.0, 200.0], [mean], [std], 2)
    meta = Checkpoint(model.arch, model.init_args, prep, list(CLASSES), train_case_ids=list(train_ids),
                      member=member, members=members, seed=seed)
    return save_checkpoint(path, model, meta)


def make_members(path: Path, k: int, dims: int = 2) -> list[Path]:
    return [make_checkpoint(member_path(path, m), dims=dims, seed=10 + m, member=m, members=k) for m in range(k)]


def make_predict(out: Path, n_cases: int = 3, shape=(20, 24), seed: int = 0) -> Path:
    """predict.h5 with ``n_cases`` CT-like images (1, *shape), spacing and a flat probability map."""
    rng = np.random.default_rng(seed)
    ids = [f"case{i:02d}" for i in range(n_cases)]
    spacing = (2.0, 0.8, 0.8)[-len(shape):]

    def process(cid, g):
        img = rng.normal(50, 80, size=(1, *shape)).astype(np.float32)
        write_array(g, "image", img)
        write_array(g, "probabilities", np.full((3, *shape), 1 / 3, dtype=np.float16))
        write_array(g, "segmentation", np.zeros(shape, dtype=np.uint8))
        g.attrs["spacing"] = list(spacing)
        g.attrs["source"] = f"synthetic/{cid}"
        g.attrs["train_case"] = False

    run_stage(StageRun("predict", out, {"class_names": CLASSES}, ids, quiet=True), process)
    return out
