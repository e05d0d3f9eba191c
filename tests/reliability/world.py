"""A small, complete pipeline on disk (images, masks, checkpoint, predict/samples/uncertainty files, features)
made once through the real commands, copied for every test that damages or reuses it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import run_cli
from tests.models.fixtures import random_checkpoint, write_disks

REPO = Path(__file__).resolve().parents[2]


def build_world(root: Path) -> Path:
    """``root/{images,masks,seg.pt,predict.h5,samples.h5,uncertainty.h5,features.csv}`` — 4 photos of 30x40."""
    root.mkdir(parents=True, exist_ok=True)
    images, masks = write_disks(root, 4)
    ck = random_checkpoint(root / "seg.pt", input_size=(32, 48))
    old = Path.cwd()
    os.chdir(root)
    try:
        assert run_cli("predict", "-i", "images", "--masks", "masks", "-m", "seg.pt", "-q", "--device", "cpu") == 0
        assert run_cli("sample", "-m", "seg.pt", "--method", "tta", "-T", "2", "-q", "--device", "cpu") == 0
        assert run_cli("uncertainty", "--measure", "entropy", "-q") == 0
        assert run_cli("aggregate", "-q") == 0
    finally:
        os.chdir(old)
    assert ck.exists() and images.is_dir() and masks.is_dir()
    return root


def copy_world(world: Path, dst: Path) -> Path:
    shutil.copytree(world, dst, symlinks=True)
    return dst


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative path -> digest)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def uqseg_subprocess(*args: object, cwd: Path, env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "uqseg_cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
