"""Errors that reach the user as one line and a documented exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CASE_FAILED = 1  # the stage ran, some cases failed
EXIT_USAGE = 2  # bad options, bad input files, refused resume
EXIT_INTERRUPTED = 130  # Ctrl-C after flushing what is complete


class UqsegError(Exception):
    """An error the CLI reports as one line (no traceback unless --debug)."""

    exit_code = EXIT_USAGE


class InputError(UqsegError):
    """An input file or case is unreadable or inconsistent. Message names file, case and problem."""


class StoreError(UqsegError):
    """An HDF5 stage file is missing, of the wrong stage/schema, or refuses the operation."""


class CaseError(Exception):
    """One case failed; the stage reports it, skips it and exits 1 at the end."""
