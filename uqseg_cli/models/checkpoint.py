"""uqseg checkpoints: one ``torch.save`` file that loads with ``weights_only=True``.

Layout: ``{"format": "uqseg-checkpoint", "version": 1, "meta": <JSON string>, "state_dict": {name: tensor}}``.
The JSON meta (`Checkpoint`) holds the architecture name and constructor arguments, the preprocessing, class
names and training metadata. Nothing in the file is a pickled Python object, so a checkpoint from the internet
cannot run code: files that need more than tensors and plain containers are refused.

Ensembles: ``train --members K -o seg.pt`` writes ``seg.pt`` (member 0) and ``seg.member1.pt`` …
``seg.member{K-1}.pt``; `resolve_members` finds them again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from uqseg_cli import __version__
from uqseg_cli.errors import InputError
from uqseg_cli.io.atomic import atomic_write
from uqseg_cli.models.base import SegModel
from uqseg_cli.models.preprocessing import Preprocessing

FORMAT = "uqseg-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """Everything about a trained segmenter except its weights (plain JSON types only).

    ``train_case_ids``: cases whose images the weights were fitted on; ``val_case_ids``: cases used to pick the best
    epoch. ``member``/``members``: index and count of ensemble members; ``fold``/``folds``: for ``train --folds K``
    the fold this member left out (its out-of-fold cases are ``fold_case_ids``). ``val_dice``: mean foreground Dice
    per validation case at ``best_epoch``. ``data_fingerprint``: sha256 of the training data as read.
    """

    arch: str
    init_args: dict
    preprocessing: Preprocessing
    class_names: list[str]
    train_case_ids: list[str] = field(default_factory=list)
    val_case_ids: list[str] = field(default_factory=list)
    member: int = 0
    members: int = 1
    seed: int = 0
    fold: int | None = None
    folds: int | None = None
    fold_case_ids: list[str] = field(default_factory=list)
    epochs: int = 0
    best_epoch: int = 0
    val_dice: float | None = None
    data_fingerprint: str = ""
    training: dict = field(default_factory=dict)
    # in the main checkpoint (member 0) of `train`: the file names of every member, itself first, and the
    # fingerprints of members 1.. — an ensemble loads exactly these, never stray seg.member<k>.pt files
    member_files: list[str] = field(default_factory=list)
    member_fingerprints: list[str] = field(default_factory=list)
    uqseg_version: str = __version__

    @property
    def num_classes(self) -> int:
        return int(self.init_args["num_classes"])

    @property
    def dims(self) -> int:
        return len(self.preprocessing.input_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        d = json.loads(text)
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def save_checkpoint(path: Path | str, model: SegModel, meta: Checkpoint) -> Path:
    """Write ``model``'s weights and ``meta`` to ``path`` (atomically: temporary name, then rename)."""
    path = Path(path)
    if meta.arch != model.arch or meta.init_args != model.init_args:
        raise ValueError("checkpoint meta does not describe this model (arch/init_args differ)")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "meta": meta.to_json(), "state_dict": state}
    from uqseg_cli.errors import check_room

    check_room(path, sum(t.numel() * t.element_size() for t in state.values()))  # torch fails messily otherwise
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[Checkpoint, dict]:
    """Load ``(meta, state_dict)`` with ``weights_only=True``; one-line `InputError` for anything else."""
    from uqseg_cli.io.untrusted import load_torch_file

    path = Path(path)
    payload = load_torch_file(path, "uqseg checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a uqseg checkpoint (a torch file without the uqseg header)")
    if payload.get("version") != VERSION:
        raise InputError(f"{path}: uqseg checkpoint version {payload.get('version')} is not supported (need {VERSION})")
    try:
        meta = Checkpoint.from_json(payload["meta"])
        state = payload["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("state_dict is not a mapping of tensors")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: damaged uqseg checkpoint ({exc})") from None
    return meta, state


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> tuple[SegModel, Checkpoint]:
    """Rebuild the model of a checkpoint (eval mode, on ``map_location``) and return ``(model, meta)``."""
    from uqseg_cli.models.registry import create_model

    meta, state = read_checkpoint(path, map_location)
    model = create_model(meta.arch, pretrained=False, **meta.init_args)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit architecture {meta.arch}: {str(exc).splitlines()[0]}") from None
    return model.to(map_location).eval(), meta


def checkpoint_fingerprint(path: Path | str) -> str:
    """sha256 (first 32 hex digits) of the checkpoint file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def member_path(path: Path | str, member: int) -> Path:
    """File of ensemble member ``member`` for ``train -o path``: member 0 is ``path`` itself, member k>0 is
    ``<stem>.member<k><suffix>`` next to it."""
    path = Path(path)
    if member == 0:
        return path
    return path.with_name(f"{path.stem}.member{member}{path.suffix}")


_MEMBER = re.compile(r"\.member(\d+)$")


def resolve_members(spec: Path | str) -> list[Path]:
    """The checkpoint files of an ensemble, in member order.

    ``spec`` may be a checkpoint file (``seg.pt`` → ``seg.pt`` + its ``seg.member<k>.pt`` siblings), a folder (its
    ``*.pt`` files) or a glob pattern (``'runs/*/seg.pt'``). Raises `InputError` when nothing matches."""
    s = str(spec)
    p = Path(s)
    if p.is_file():
        recorded = _recorded_members(p)
        if recorded is not None:
            return recorded
        sibs = []
        for q in p.parent.glob(f"{glob.escape(p.stem)}.member*{p.suffix}"):
            m = _MEMBER.search(q.name[: len(q.name) - len(p.suffix)] if p.suffix else q.name)
            if m:
                sibs.append((int(m.group(1)), q))
        return [p] + [q for _, q in sorted(sibs)]
    if p.is_dir():
        files = sorted(p.glob("*.pt"), key=_member_key)
        if not files:
            raise InputError(f"{p}: folder holds no *.pt checkpoints")
        return files
    matches = sorted((Path(q) for q in glob.glob(s) if Path(q).is_file()), key=_member_key)
    if not matches:
        raise InputError(f"{s}: no checkpoint matches")
    return matches


def _recorded_members(p: Path) -> list[Path] | None:
    """The members a `train` checkpoint records (checked against their fingerprints), or None for a checkpoint
    that records none (older files, single checkpoints made elsewhere: then the siblings are globbed)."""
    meta, _ = read_checkpoint(p)
    if not meta.member_files:
        return None
    paths = [p] + [p.parent / name for name in meta.member_files[1:]]
    for q, fp in zip(paths[1:], meta.member_fingerprints, strict=False):
        if not q.is_file():
            raise InputError(f"{q}: ensemble member recorded in {p.name} is missing (moved or deleted?)")
        if fp and checkpoint_fingerprint(q) != fp:
            raise InputError(
                f"{q}: is not the member recorded in {p.name} (the file changed since training; retrain, or pass "
                "the members explicitly)"
            )
    return paths


def _member_key(q: Path) -> tuple:
    stem = q.name[: -len(q.suffix)] if q.suffix else q.name
    m = _MEMBER.search(stem)
    return (str(q.parent), _MEMBER.sub("", stem), int(m.group(1)) if m else 0)
