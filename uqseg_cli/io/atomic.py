"""Atomic file writes: a file is either the old one or the complete new one, never half written.

Every writer of a finished output (tables, checkpoints, NIfTI maps, figures, reports, merged HDF5 files) goes
through :func:`atomic_write`: it writes under a per-process temporary name next to the target
(``.<name>.tmp-<pid>``, which `io.leftovers` recognises and removes once that process is gone), fsyncs, and
``os.replace``s it onto the target. A full disk is a :class:`~uqseg_cli.errors.DiskFullError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from uqseg_cli.errors import DiskFullError, disk_full_message, is_disk_full


def temporary_name(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary name of ``path`` for this process; ``keep_suffix`` ends it with the target's suffix (for
    writers that pick the format from the name, e.g. ``.nii.gz``)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if keep_suffix:
        suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
        tmp = tmp.with_name(tmp.name + suffix)
    return tmp


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[Path], object], *, keep_suffix: bool = False) -> Path:
    """Create ``path`` through ``write(tmp)``: temporary name, fsync, ``os.replace``; the temporary file is removed
    on any failure. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_suffix)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc) or "file write failed" in str(exc):  # torch.save does not keep the errno
            raise DiskFullError(disk_full_message(path, exc)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
