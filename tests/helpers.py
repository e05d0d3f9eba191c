"""Helpers shared by the test packages."""

from __future__ import annotations

import sys


def run_cli(*args: object) -> int:
    """Run the real console entry point in-process; returns its exit code."""
    from uqseg_cli.cli.app import main

    old = sys.argv
    sys.argv = ["uqseg", *map(str, args)]
    try:
        ret = main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = old
    return int(ret or 0)


def run_captured(capsys, *args: object) -> tuple[int, str, str]:
    """`run_cli` with pytest's ``capsys``: returns (exit code, stdout, stderr)."""
    code = run_cli(*args)
    out = capsys.readouterr()
    return code, out.out, out.err
