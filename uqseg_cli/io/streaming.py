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
_recent: OrderedDict[tuple, Case] = OrderedDict()


def _read(spec: CaseSpec, load_kw: tuple = ()) -> Case:
    key = (spec, load_kw)
    with _lock:
        case = _recent.get(key)
        if case is not None:
            _recent.move_to_end(key)
            return case
    case = load_case(spec, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in load_kw})
    with _lock:
        _recent[key] = case
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
    load_kw: tuple = ()  # keyword arguments of `load_case` as ((name, value), ...), lists as tuples

    @classmethod
    def open(cls, spec: CaseSpec, **load_kw) -> StreamedCase:
        """Read the case once (so unreadable files fail here, as with `load_case(spec, **load_kw)`) and keep only
        its header."""
        kw = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in load_kw.items() if v is not None))
        case = _read(spec, kw)
        return cls(spec, tuple(case.image.shape), tuple(case.spacing), case.source, dict(case.meta), kw)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def image(self) -> np.ndarray:
        return _read(self.spec, self.load_kw).image

    @property
    def mask(self) -> np.ndarray | None:
        return _read(self.spec, self.load_kw).mask

    @property
    def raters(self) -> np.ndarray | None:
        return _read(self.spec, self.load_kw).raters

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape) - 1

    def load(self) -> Case:
        """The case in memory (a plain `Case`)."""
        return _read(self.spec, self.load_kw)

    def with_meta(self, meta: dict) -> StreamedCase:
        return StreamedCase(self.spec, self.shape, self.spacing, self.source, dict(meta), self.load_kw)


def clear_cache() -> None:
    with _lock:
        _recent.clear()
