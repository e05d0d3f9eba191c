"""Built-in demo data: synthetic dermoscopy-like lesion photos with a reference mask and three raters.

Lesions are irregular blobs whose contrast and boundary sharpness vary from case to case, so that a segmenter
trained on them is good on some cases and poor on others — what quality prediction needs. The three raters
threshold the same soft lesion at different levels, so they disagree at the boundary (as QUBIQ raters do).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

RATER_LEVELS = (0.35, 0.5, 0.65)


def make_case(rng: np.random.Generator, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic case: ``(image (H, W, 3) uint8, reference (H, W) uint8, raters (3, H, W) uint8)``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.12, 0.32) * h, rng.uniform(0.12, 0.32) * w
    theta = np.arctan2(yy - cy, xx - cx)
    # irregular border: a few random harmonics of the radius
    wobble = 1 + sum(rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / wobble
    sharpness = rng.uniform(0.03, 0.25)  # fuzzy borders make ambiguous cases
    soft = 1 / (1 + np.exp((r - 1) / sharpness))
    contrast = rng.uniform(0.15, 0.8)  # faint lesions are hard
    skin = np.array([0.86, 0.70, 0.60]) + rng.normal(0, 0.03, 3)
    lesion = np.array([0.45, 0.28, 0.18]) + rng.normal(0, 0.04, 3)
    illum = 1 - 0.15 * ((xx / w - rng.uniform(0, 1)) ** 2 + (yy / h - rng.uniform(0, 1)) ** 2)
    texture = gaussian_filter(rng.normal(0, 1, (h, w)), 1.5) * 0.05
    mix = (contrast * soft)[..., None]
    img = ((1 - mix) * skin + mix * lesion) * illum[..., None] + texture[..., None]
    img += rng.normal(0, 0.03, img.shape)
    # a few dark hairs crossing the image
    for _ in range(rng.integers(0, 4)):
        a, b = rng.uniform(-1, 1), rng.uniform(0, h)
        line = np.abs(yy - (a * xx + b)) < 0.8
        img[line] *= 0.5
    image = np.clip(img * 255, 0, 255).astype(np.uint8)
    reference = (soft > 0.5).astype(np.uint8)
    raters = np.stack([(soft > lv).astype(np.uint8) for lv in RATER_LEVELS])
    return image, reference, raters


def write_demo_dataset(folder: Path | str, n: int = 48, seed: int = 0, h: int = 96, w: int = 128) -> Path:
    """Write ``images/``, ``masks/`` and ``rater1..3/`` PNG folders with ``n`` cases; returns ``folder``."""
    folder = Path(folder)
    for sub in ("images", "masks", "rater1", "rater2", "rater3"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, ref, raters = make_case(rng, h, w)
        cid = f"demo{i:03d}"
        Image.fromarray(image).save(folder / "images" / f"{cid}.png")
        Image.fromarray(ref * 255).save(folder / "masks" / f"{cid}.png")
        for k in range(3):
            Image.fromarray(raters[k] * 255).save(folder / f"rater{k + 1}" / f"{cid}.png")
    return folder
