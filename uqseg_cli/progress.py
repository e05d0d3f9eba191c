"""Progress and messages on standard error: rich bar on a terminal, plain ``i/N ... ETA`` lines otherwise."""

from __future__ import annotations

import sys
import time


def log(msg: str, quiet: bool = False) -> None:
    """An informational line on stderr (suppressed by --quiet)."""
    if not quiet:
        print(f"uqseg: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """A warning on stderr (never suppressed)."""
    print(f"uqseg: warning: {msg}", file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Per-case progress for one stage. ``advance(case_id)`` after each case."""

    def __init__(self, total: int, label: str, quiet: bool = False, interval: float = 5.0):
        self.total, self.label, self.quiet, self.interval = total, label, quiet, interval
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._rich = None
        if not quiet and total > 0 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn(f"[bold]{label}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[case]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(label, total=total, case="")

    def advance(self, case_id: str, status: str = "ok") -> None:
        self.count += 1
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=1, case=f"{case_id} {status}")
            return
        now = time.monotonic()
        if status != "ok" or self.count in (1, self.total) or now - self._last >= self.interval:
            self._last = now
            elapsed = now - self.start
            eta = elapsed / self.count * (self.total - self.count)
            print(
                f"uqseg {self.label}: {self.count}/{self.total} {case_id} {status} "
                f"(elapsed {_fmt(elapsed)}, ETA {_fmt(eta)})",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
