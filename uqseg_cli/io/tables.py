"""CSV and JSON outputs: written atomically to a file, or to standard output with ``-``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import pandas as pd

from uqseg_cli.errors import DiskFullError, UqsegError, disk_full_message, is_disk_full
from uqseg_cli.io.atomic import atomic_write_text, temporary_name


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


class TableStream:
    """A CSV table written piece by piece, for tables too long to hold in memory: the header now, then each
    :meth:`write` of rows, under the temporary name of :func:`write_table` (``.<name>.tmp-<pid>``); :meth:`commit`
    fsyncs it and moves it onto ``path`` (``-``: the rows wait in an anonymous temporary file and go to standard
    output at :meth:`commit`), :meth:`abort` removes it. The bytes equal ``write_table`` of all the pieces
    concatenated as long as every piece has the same column dtypes (pandas formats each value on its own)."""

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        self.path = path
        self._tmp: Path | None = None
        if str(path) == "-":
            self._fh: IO[str] = tempfile.TemporaryFile("w+", newline="", encoding="utf-8")
        else:
            from uqseg_cli.io.leftovers import clean_leftovers

            target = Path(path)
            clean_leftovers(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temporary_name(target)
            self._fh = self._guard(lambda: self._tmp.open("w", newline="", encoding="utf-8"))  # type: ignore[union-attr]
        self._write(pd.DataFrame(columns=columns).to_csv(index=False, lineterminator="\n"))

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(disk_full_message(self.path, exc)) from None
            raise

    def _write(self, text: str) -> None:
        self._guard(lambda: self._fh.write(text))

    def write(self, df: pd.DataFrame) -> None:
        """Append the rows of ``df`` (its columns in the order given at creation)."""
        if not df.empty:
            self._write(df.to_csv(index=False, header=False, lineterminator="\n"))

    def commit(self) -> None:
        """Finish the table: fsync and move it onto its path (or copy it to standard output)."""
        if self._tmp is None:
            self._fh.seek(0)
            for chunk in iter(lambda: self._fh.read(1 << 20), ""):
                sys.stdout.write(chunk)
            sys.stdout.flush()
            self._fh.close()
            return

        def finish() -> None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self._tmp, self.path)  # type: ignore[arg-type]

        try:
            self._guard(finish)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the table (the temporary file is removed; nothing at ``path`` changes)."""
        self._fh.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


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
