"""An advisory lock so two processes never write the same output.

Protocol (``flock`` on ``<out>.lock``, safe although the lock file is removed after use): the holder removes the
file *while it still holds the lock*, and whoever acquires a lock checks that the path still names the very file
it locked — a process that opened the old file before it was removed finds it gone and starts over on the new
one. (Unlinking first and unlocking after without that check let two writers overlap; see
tests/reliability/test_lock_race.py.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from uqseg_cli.errors import StoreError


class OutputLock:
    """``flock`` on ``<out>.lock``; refuses (does not wait) when another process holds it."""

    def __init__(self, out: Path):
        self.path = Path(str(out) + ".lock")
        self.fd: int | None = None

    def _refuse(self) -> None:
        holder = ""
        try:
            holder = self.path.read_text().strip()
        except OSError:
            pass
        raise StoreError(
            f"{self.path.with_suffix('')}: another uqseg process is writing this output"
            + (f" ({holder})" if holder else "")
        ) from None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self._refuse()
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            # the file we locked was removed by its previous holder: it guards nothing; take the new one
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:  # pragma: no cover - would need 100 holders in a row to release exactly between our two calls
            self._refuse()
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # still locked: nobody else can hold this file now
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
