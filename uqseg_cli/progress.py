"""Progress and messages on standard error: rich bar on a terminal, plain ``i/N ... ETA`` lines otherwise.

One implementation for every long step: :class:`Progress` counts units (cases, epochs, fits × epochs) and shows
a bar with the time remaining on a terminal, or a plain line ``uqseg <label>: i/N <what> (elapsed, ETA)`` at least
every ``interval`` seconds (and for the first and last unit and every failure) when standard error is not a
terminal. :class:`FitProgress` counts model fits made of epochs (``score``'s cross-fitted CNNs).

This is the only progress implementation (``tqdm`` is not a dependency): its plain lines stay readable in log
files and SLURM output, where a redrawn bar would leave carriage-return noise.
"""

from __future__ import annotations

import sys
import time


def log(msg: str, quiet: bool = False) -> None:
    """An informational line on stderr (suppressed by --quiet)."""
    if not quiet:
        _emit(f"uqseg: {msg}")


def warn(msg: str) -> None:
    """A warning on stderr (never suppressed)."""
    _emit(f"uqseg: warning: {msg}")


def error(msg: str) -> None:
    """A failed case's one-line error on stderr (never suppressed); the run goes on and exits 1 at the end."""
    _emit(f"uqseg: error: {msg}")


_ACTIVE: list[Progress] = []  # bars being drawn: messages go above them instead of through them


def _emit(line: str) -> None:
    live = next((p for p in reversed(_ACTIVE) if p._rich is not None), None)
    if live is not None:
        live._rich.console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress over ``total`` units for one step. ``advance(item)`` after each unit (a case, an epoch, ...);
    ``update(count, item)`` sets the count; ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, total: int, label: str, quiet: bool = False, interval: float = 5.0):
        self.total, self.label, self.quiet, self.interval = total, label, quiet, interval
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._rich = None
        self._owner = False
        if not quiet and total > 0 and sys.stderr.isatty():
            outer = next((p for p in reversed(_ACTIVE) if p._rich is not None), None)
            if outer is not None:  # a step inside a longer one: a second bar in the same display
                self._rich = outer._rich
            else:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
                from rich.progress import Progress as RichProgress

                self._rich = RichProgress(
                    TextColumn("[bold]{task.description}[/bold]"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[case]}"),
                    console=Console(stderr=True),
                    transient=False,
                )
                self._rich.start()
                self._owner = True
            self._task = self._rich.add_task(label, total=total, case="")
        _ACTIVE.append(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def eta(self) -> float | None:
        """Seconds left at the mean rate so far (None before the first unit)."""
        if self.count <= 0:
            return None
        return (time.monotonic() - self.start) / self.count * max(self.total - self.count, 0)

    def advance(self, case_id: str, status: str = "ok", step: int = 1) -> None:
        self.update(self.count + step, case_id, status)

    def update(self, count: int, item: str = "", status: str = "ok") -> None:
        """Set the number of finished units to ``count`` (and say what was just done)."""
        self.count = min(int(count), self.total) if self.total else int(count)
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.count, case=f"{item} {status}".strip())
            return
        now = time.monotonic()
        if status != "ok" or self.count in (1, self.total) or now - self._last >= self.interval:
            self._last = now
            elapsed = now - self.start
            eta = self.eta()
            what = f" {item}" if item else ""
            st = f" {status}" if status else ""
            print(
                f"uqseg {self.label}: {self.count}/{self.total}{what}{st} "
                f"(elapsed {_fmt(elapsed)}, ETA {_fmt(eta or 0.0)})",
                file=sys.stderr,
                flush=True,
            )

    def note(self, msg: str) -> None:
        """A message line (kept above the bar on a terminal); suppressed by --quiet."""
        if not self.quiet:
            _emit(f"uqseg: {msg}")

    def close(self) -> None:
        if self._rich is not None:
            if self._owner:
                self._rich.stop()
            else:
                self._rich.remove_task(self._task)
            self._rich = None
        if self in _ACTIVE:
            _ACTIVE.remove(self)


class FitProgress:
    """``fits`` model fits of at most ``epochs`` epochs each, as one :class:`Progress` with ETA.

    ``epoch(name, e, n)`` after epoch ``e`` of ``n`` of the current fit; ``done(name, line)`` when it ends (an
    early stop counts its remaining epochs as done, so the ETA is an upper bound that only shrinks).
    """

    def __init__(self, fits: int, epochs: int, label: str, quiet: bool = False, interval: float = 5.0):
        self.fits, self.epochs, self.fit = max(int(fits), 1), max(int(epochs), 1), 0
        self.bar = Progress(self.fits * self.epochs, label, quiet=quiet, interval=interval)

    def epoch(self, name: str, e: int, n: int) -> None:
        base = self.fit * self.epochs
        self.bar.update(base + min(e, self.epochs), f"fit {self.fit + 1}/{self.fits} {name}: epoch {e}/{n}", "")

    def done(self, name: str, line: str = "") -> None:
        self.fit = min(self.fit + 1, self.fits)
        if line:
            self.bar.note(f"{name}: {line}")
        self.bar.update(self.fit * self.epochs, f"fit {self.fit}/{self.fits} {name} done", "")

    def close(self) -> None:
        self.bar.close()


class Steps:
    """Numbered steps of a stage (``explain``: model pass, Grad-CAM, UMAP, plots, report).

    ``start(what)`` logs ``<label> step i/N: what (elapsed …)``; while a step runs, a line ``… still running``
    follows every ``heartbeat`` seconds, so a single long call (UMAP's first compilation, say) is never silent for
    longer. ``close()`` ends the last step. Quiet: nothing.
    """

    def __init__(self, total: int, label: str, quiet: bool = False, heartbeat: float = 10.0):
        self.total, self.label, self.quiet, self.heartbeat = total, label, quiet, heartbeat
        self.i = 0
        self.start_time = time.monotonic()
        self._stop = None
        self._thread = None

    def start(self, what: str) -> None:
        self._end()
        self.i += 1
        if self.quiet:
            return
        short = f"{self.label} step {self.i}/{self.total}"
        name = f"{short}: {what}"
        log(f"{name} (elapsed {_fmt(time.monotonic() - self.start_time)})")
        import threading

        stop = threading.Event()
        t0 = time.monotonic()

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                log(f"{short} still running ({_fmt(time.monotonic() - t0)} in this step)")

        self._stop, self._thread = stop, threading.Thread(target=beat, daemon=True)
        self._thread.start()

    def _end(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self._stop = self._thread = None

    def close(self) -> None:
        self._end()
