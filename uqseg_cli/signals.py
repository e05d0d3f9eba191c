"""SIGINT and SIGTERM end a run the same clean way (finished cases kept, no success line); exit 130 or 143.

SIGTERM (what schedulers and ``kill PID`` send) is turned into `Terminated`, a ``KeyboardInterrupt``, so every
place that stops cleanly on Ctrl-C stops cleanly on SIGTERM too; `exit_code` tells the two apart at the end.
SIGXFSZ (a ``ulimit -f`` file-size limit) is ignored so that the write fails with an error that the stage
reports as "no space left" instead of the process dying without a word.
"""

from __future__ import annotations

import signal

from uqseg_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

_received: list[int] = []
_pending: list[int] = []  # signals whose exception may not have reached the run (see `check`)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


def _on_term(signum, frame) -> None:
    _received.append(signum)
    _pending.append(signum)
    raise Terminated()


def _on_int(signum, frame) -> None:
    _received.append(signum)
    _pending.append(signum)
    raise KeyboardInterrupt()


def check() -> None:
    """Raise the interruption again when a signal arrived but its exception was lost: raised while Python ran a
    finaliser or a weakref callback (garbage collection can run one at any moment), it is printed as "Exception
    ignored" and the code goes on. Call where a run can stop cleanly (the stage runner: before each case)."""
    if _pending:
        sig = _pending[-1]
        _pending.clear()
        raise Terminated() if sig == signal.SIGTERM else KeyboardInterrupt()


def handled() -> None:
    """The interruption reached the code that stops the run: `check` has nothing left to raise."""
    _pending.clear()


_saved: dict[int, object] = {}


def install() -> None:
    """Install the handlers (main thread only; a no-op elsewhere); `restore` puts the previous ones back."""
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGXFSZ", None)):
            if sig is not None:
                _saved[sig] = signal.getsignal(sig)
        signal.signal(signal.SIGTERM, _on_term)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_int)
        if hasattr(signal, "SIGXFSZ"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass


def exit_code(exc: BaseException | None = None) -> int:
    """143 when the interruption was a SIGTERM, 130 otherwise (Ctrl-C)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Terminated):
            return EXIT_TERMINATED
        exc = exc.__cause__ or exc.__context__
    if _received and _received[-1] == signal.SIGTERM:
        return EXIT_TERMINATED
    return EXIT_INTERRUPTED


def restore() -> None:
    """The handlers from before `install` (so that running the CLI in-process leaves the caller's handlers)."""
    try:
        for sig, handler in _saved.items():
            signal.signal(sig, handler)
    except ValueError:
        pass
    _saved.clear()


def reset() -> None:
    _received.clear()
    _pending.clear()
