"""An advisory lock so two processes never write the same output."""

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

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = ""
            try:
                holder = self.path.read_text().strip()
            except OSError:
                pass
            raise StoreError(
                f"{self.path.with_suffix('')}: another uqseg process is writing this output"
                + (f" ({holder})" if holder else "")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
