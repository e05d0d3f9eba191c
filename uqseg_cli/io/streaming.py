"""Cases that stay on disk: `StreamedCase` reads its arrays when asked, through a small LRU of recent cases.

`uqseg train` used to hold every image and mask of the training set in memory (2,000 ISIC images: ~0.5 GB of
arrays before any preprocessing). A `StreamedCase` keeps only where its files are and what a first read found
(shape, spacing); ``image`` and ``mask`` decode on access. The last few cases read stay cached (``CACHE_CASES``),
so consecutive ``c.image`` / ``c.mask`` of one case decode once. Values are exactly those of
`uqseg_cli.io.cases.load_case`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from uqseg_cli.io.cases import CaseSpec, load_case
from uqseg_cli.io.readers import Case

CACHE_CASES = 8

_lock = threading.Lock()
_recent: OrderedDict[CaseSpec, Case] = OrderedDict()


def _read(spec: CaseSpec) -> Case:
    with _lock:
        case = _recent.get(spec)
        if case is not None:
            _recent.move_to_end(spec)
            return case
    case = load_case(spec)
    with _lock:
        _recent[spec] = case
        while len(_recent) > CACHE_CASES:
            _recent.popitem(last=False)
    return case


@dataclass
class StreamedCase:
    """A `Case` whose ``image``, ``mask`` and ``raters`` are read from disk on access (duck-types `Case`)."""

    spec: CaseSpec
    shape: tuple[int, ...]  # (C, *spatial) of the image
    spacing: tuple[float, ...]
    source: str
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, spec: CaseSpec) -> StreamedCase:
        """Read the case once (so unreadable files fail here, as with `load_case`) and keep only its header."""
        case = _read(spec)
        return cls(spec, tuple(case.image.shape), tuple(case.spacing), case.source, dict(case.meta))

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def image(self) -> np.ndarray:
        return _read(self.spec).image

    @property
    def mask(self) -> np.ndarray | None:
        return _read(self.spec).mask

    @property
    def raters(self) -> np.ndarray | None:
        return _read(self.spec).raters

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape) - 1

    def load(self) -> Case:
        """The case in memory (a plain `Case`)."""
        return _read(self.spec)

    def with_meta(self, meta: dict) -> StreamedCase:
        return StreamedCase(self.spec, self.shape, self.spacing, self.source, dict(meta))


def clear_cache() -> None:
    with _lock:
        _recent.clear()
