"""CSV and JSON outputs: written atomically to a file, or to standard output with ``-``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from uqseg_cli.errors import UqsegError
from uqseg_cli.io.atomic import atomic_write_text


def _atomic_write_text(path: Path, text: str) -> None:
    from uqseg_cli.io.leftovers import clean_leftovers

    clean_leftovers(path)  # temporary files of killed writers of this table
    atomic_write_text(path, text)


def check_writable(path: str | Path, overwrite: bool) -> None:
    """Refuse to replace an existing table unless ``--overwrite`` (``-`` is always fine), and never replace an
    HDF5 stage file or a torch checkpoint with a table (``aggregate -i uncertainty.h5 -o uncertainty.h5``)."""
    if str(path) == "-" or not Path(path).exists():
        return
    if Path(path).is_file():
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            head = b""
        kind = "an HDF5 stage file" if head.startswith(b"\x89HDF") else (
            "a torch checkpoint" if head.startswith(b"PK\x03\x04") else "")
        if kind:
            raise UqsegError(f"{path}: is {kind} (an input?), not a table; writing the table there would destroy "
                             "it — choose another output name")
    if not overwrite:
        raise UqsegError(f"{path}: exists; pass --overwrite to replace it")


def write_table(df: pd.DataFrame, path: str | Path, float_format: str | None = None) -> None:
    """Write ``df`` as CSV (no index) to ``path`` atomically, or to stdout when ``path`` is ``-``."""
    text = df.to_csv(index=False, float_format=float_format, lineterminator="\n")
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    _atomic_write_text(Path(path), text)


def write_json(obj: Any, path: str | Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    _atomic_write_text(Path(path), text)


def read_table(path: str | Path, required: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV, checking that ``required`` columns are present (one clear error otherwise)."""
    p = Path(path)
    if not p.exists():
        raise UqsegError(f"{p}: file not found")
    try:
        df = pd.read_csv(p)
    except Exception as exc:
        raise UqsegError(f"{p}: cannot read CSV: {exc}") from None
    missing = [c for c in (required or []) if c not in df.columns]
    if missing:
        raise UqsegError(f"{p}: missing column(s) {', '.join(missing)}")
    return df
