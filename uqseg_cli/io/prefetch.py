"""Read the next case while the current one computes: a one-thread prefetching loader for the stage runner.

A stage's ``process(case_id, group)`` asks ``prefetch.get(case_id)`` for its inputs instead of reading them itself.
The loader knows the order in which the runner visits cases (the part's sorted case ids), so while case ``i``
computes, a background thread already decodes case ``i + 1`` (PIL, nibabel and h5py release the GIL while they
decode, decompress and read, and torch releases it in its kernels). Loading is pure I/O: the numbers a stage
writes do not change, and a case's load error is raised from ``get`` for that case exactly as a direct read would.

Memory: at most ``depth`` cases are held ahead (default 1). Cases the runner skips (already journalled on resume)
cost at most ``depth`` wasted loads per gap; their results are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """``get(case_id)`` returns ``load(case_id)``, with the next ``depth`` cases of ``order`` loading in a thread.

    Use as a context manager (or call ``close``) so the thread ends with the stage. ``depth=0`` loads in the
    caller's thread only (no thread at all).
    """

    def __init__(self, load: Callable[[str], T], order: Sequence[str], depth: int = 1) -> None:
        self._load = load
        self._order = list(order)
        self._pos = {c: i for i, c in enumerate(self._order)}
        self.depth = max(0, int(depth))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uqseg-prefetch") if self.depth else None
        self._ahead: dict[str, Future] = {}

    def get(self, case_id: str) -> T:
        fut = self._ahead.pop(case_id, None)
        i = self._pos.get(case_id)
        if self._pool is not None and i is not None:
            for c in [c for c in self._ahead if self._pos[c] < i]:  # skipped by the runner
                self._ahead.pop(c).cancel()
            for c in self._order[i + 1 : i + 1 + self.depth]:
                if c not in self._ahead:
                    self._ahead[c] = self._pool.submit(self._load, c)
        if fut is None:
            return self._load(case_id)
        return fut.result()

    def close(self) -> None:
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadOnce:
    """A `CaseView` whose ``get(name)`` reads each array once: later stages ask for the same parent array (e.g.
    ``segmentation`` for the features and again for the Dice) from several places; the second ask is free.
    Everything else is passed through to the view. Hold one per case (the arrays live as long as it does)."""

    def __init__(self, view) -> None:
        self._view = view
        self._arrays: dict = {}

    def get(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self._view.get(name)
        return self._arrays[name]

    def __getattr__(self, attr: str):
        return getattr(self._view, attr)
