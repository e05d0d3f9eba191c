"""Leftovers of killed runs (temporary files, journals moved aside) and outputs that would destroy inputs.

Temporary names carry the writer's process id (``.<name>.tmp-<pid>``, ``<name>.partial.corrupt-<time>-<pid>``).
At start a stage removes those of processes that no longer run on this machine, and says so; those of live
processes are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from uqseg_cli.errors import UqsegError
from uqseg_cli.progress import warn

_PID_TAIL = re.compile(r"-(\d+)$")


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (or may: no permission to signal it)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(out: Path) -> list[tuple[Path, int]]:
    """Temporary files and moved-aside journals of ``out`` with the process id that made them."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        return []
    found = []
    prefixes = (f".{out.name}.tmp-", f"{out.name}.partial.corrupt-", f"{out.name}.corrupt-")
    for p in folder.iterdir():
        if p.name.startswith(prefixes):
            m = _PID_TAIL.search(p.name)
            if m:
                found.append((p, int(m.group(1))))
    return sorted(found)


def clean_leftovers(out: Path, quiet: bool = False) -> list[Path]:
    """Remove the leftovers of ``out`` whose process is gone; returns what was removed."""
    removed = []
    for p, pid in leftovers(out):
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        removed.append(p)
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (" ..." if len(removed) > 3 else "")
        warn(f"removed {len(removed)} leftover(s) of killed runs (process gone): {names}")
    return removed


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_output_over_inputs(out: Path, inputs: Iterable[tuple[str, Path | None]]) -> None:
    """Refuse an output path (or its journal) that is one of the inputs, e.g. ``sample -i X -o X``.

    ``inputs``: ``(what, path)`` pairs such as ``("-i", Path("predict.h5"))`` or ``("parent of -i", ...)``.
    """
    out = Path(out)
    journal = Path(str(out) + ".partial")
    for what, p in inputs:
        if p is None:
            continue
        p = Path(p)
        if _same(out, p) or _same(journal, p):
            raise UqsegError(
                f"{out}: the output is the same file as {what} ({p}); writing it would destroy the input — "
                "choose another -o"
            )
