"""Errors that reach the user as one line and a documented exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CASE_FAILED = 1  # the stage ran, some cases failed
EXIT_USAGE = 2  # bad options, bad input files, refused resume
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) after flushing what is complete
EXIT_TERMINATED = 143  # SIGTERM (a scheduler's kill, `kill PID`) after flushing what is complete


class UqsegError(Exception):
    """An error the CLI reports as one line (no traceback unless --debug)."""

    exit_code = EXIT_USAGE


class InputError(UqsegError):
    """An input file or case is unreadable or inconsistent. Message names file, case and problem."""


class StoreError(UqsegError):
    """An HDF5 stage file is missing, of the wrong stage/schema, or refuses the operation."""


class CaseError(Exception):
    """One case failed; the stage reports it, skips it and exits 1 at the end."""


class DiskFullError(UqsegError):
    """A write failed for lack of space (or a file-size limit): the run stops, finished cases stay journalled."""

    exit_code = EXIT_CASE_FAILED


_DISK_FULL_ERRNOS = (28, 27, 122)  # ENOSPC, EFBIG (ulimit -f), EDQUOT
_DISK_FULL_TEXT = ("no space left", "file too large", "disk quota", "errno = 28", "errno = 27", "errno = 122")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (an OSError from Python, h5py or torch) says the disk, a quota or a size limit is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and getattr(exc, "errno", None) in _DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, (OSError, RuntimeError)) and any(t in str(exc).lower() for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(where: object, exc: BaseException | None = None) -> str:
    why = "file size limit reached" if exc is not None and "too large" in str(exc).lower() else ""
    return f"{where}: no space left on device{f' ({why})' if why else ''}"


def check_room(out: object, need: int) -> None:
    """Raise `DiskFullError` when the disk holding ``out``, or the file-size limit (``ulimit -f``), cannot take
    about ``need`` bytes — checked before a write that a library (HDF5, torch) could not end cleanly."""
    import os
    import resource
    import shutil

    need = int(need * 1.05) + (1 << 16)
    folder = os.path.dirname(os.path.abspath(str(out)))
    free = shutil.disk_usage(folder).free
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if hasattr(resource, "RLIMIT_FSIZE") else -1
    if need > free:
        raise DiskFullError(f"{out}: no space left on device (needs about {need >> 20} MiB, {free >> 20} MiB free)")
    if soft not in (-1, resource.RLIM_INFINITY) and need > soft:
        raise DiskFullError(
            f"{out}: no space left on device (file size limit reached: needs about {need >> 10} KiB, "
            f"ulimit -f allows {soft >> 10} KiB)"
        )
