"""Synthetic data on disk and small checkpoints for the train/predict tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from tests.helpers import run_cli  # noqa: F401  (re-exported for the tests)
from uqseg_cli.models import create_model
from uqseg_cli.models.checkpoint import Checkpoint, save_checkpoint
from uqseg_cli.models.preprocessing import Preprocessing


def write_disks(root: Path, n: int, size=(30, 40), seed: int = 0) -> tuple[Path, Path]:
    """``root/images/cNN.png`` RGB photos with a bright disk, ``root/masks/cNN.png`` 0/255 masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[: size[0], : size[1]]
    for i in range(n):
        cy, cx, r = rng.uniform(10, size[0] - 10), rng.uniform(10, size[1] - 10), rng.uniform(5, 8)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = rng.integers(0, 60, (*size, 3)) + 150 * mask[..., None]
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"c{i:02d}.png")
    return root / "images", root / "masks"


def write_volume(path: Path, shape=(10, 20, 24), seed: int = 0, spacing=(0.8, 0.8, 2.0)) -> Path:
    """A NIfTI CT-like volume (X, Y, Z) = reversed ``shape`` with a bright box, and ``<stem>_mask.nii.gz``."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(0, 20, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    d, h, w = shape
    mask[d // 4 : 3 * d // 4, h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 1
    vol[mask == 1] += 150
    aff = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(vol.T.copy(), aff), str(path))
    name = path.name[: -len(".nii.gz")]
    nib.save(nib.Nifti1Image(mask.T.copy(), aff), str(path.with_name(f"{name}_mask.nii.gz")))
    return path


def random_checkpoint(
    path: Path,
    arch: str = "unet-small",
    modality: str = "photo",
    channels: int = 3,
    input_size=(32, 48),
    num_classes: int = 2,
    seed: int = 0,
    **kw,
) -> Path:
    """An untrained checkpoint (random weights), enough to exercise the prediction path."""
    import torch

    torch.manual_seed(seed)
    model = create_model(arch, in_channels=channels, num_classes=num_classes, **kw)
    if modality == "photo":
        prep = Preprocessing(
            "photo", channels, list(input_size), "stretch", 255.0, None, [0.5] * channels, [0.25] * channels
        )
    else:
        prep = Preprocessing(
            "ct", channels, list(input_size), "stretch", 1.0, [-200.0, 300.0], [0.4] * channels, [0.3] * channels, 4
        )
    names = ["background"] + [f"class{k}" for k in range(1, num_classes)]
    return save_checkpoint(path, model, Checkpoint(arch, model.init_args, prep, names, train_case_ids=["c00"]))
