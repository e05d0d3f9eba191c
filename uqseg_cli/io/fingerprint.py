"""The identity of a stage's input files, cheap enough to take on every run.

``input_identity`` records the input options (paths relative to the output's folder, like the checkpoint) and a
fingerprint of the case list — ids, file names, sizes and modification times of every image, mask and rater
file — so that a rerun with other inputs into the same output is refused (with the differing option named)
instead of silently extending or mixing it, and `uqseg merge` refuses parts made from different inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

# config keys -> the option a user changes, for "exists with different options (...)" messages
OPTION_NAMES = {
    "input": "-i/--input",
    "masks": "--masks",
    "raters": "--raters",
    "inputs_fingerprint": "the input files (ids, sizes, modification times)",
    "parent_fingerprint": "the -i file's content (parent fingerprint)",
    "batch_size": "--batch-size",
    "nan_policy": "--nan-policy",
}


def _rel(path: Path | str | None, out_dir: Path) -> str | None:
    if path is None:
        return None
    try:
        return os.path.relpath(Path(path).resolve(), out_dir.resolve())
    except ValueError:
        return str(Path(path).resolve())


def _stat(path: Path | None) -> list:
    if path is None:
        return []
    try:
        st = os.stat(path)
    except OSError:
        return [Path(path).name, None, None]
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def cases_fingerprint(specs: Sequence) -> str:
    """sha256 (32 hex digits) over every case's id and the name, size and mtime of each of its files."""
    h = hashlib.sha256()
    for s in sorted(specs, key=lambda s: s.id):
        row = [s.id, _stat(s.image), _stat(s.mask), [_stat(r) for r in s.raters]]
        if getattr(s, "channels", None):  # further channel files of a multi-channel (nnU-Net) case
            row.append([_stat(c) for c in s.channels])
        h.update(json.dumps(row).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def input_identity(
    specs: Sequence, input: Path | str, out: Path, masks: Path | str | None = None, raters: Sequence | None = None
) -> dict:
    """Config entries that identify the inputs of a stage reading images/volumes (``predict``)."""
    out_dir = Path(out).parent
    return {
        "input": _rel(input, out_dir),
        "masks": _rel(masks, out_dir),
        "raters": [_rel(r, out_dir) for r in (raters or [])],
        "inputs_fingerprint": cases_fingerprint(specs),
    }
