"""Per-case random generators (DESIGN §3, Determinism).

Every random draw for a case comes from a generator seeded by ``(seed, case_id, method)``, so a resumed,
sharded or re-ordered run writes exactly the same numbers.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def case_seed(seed: int, case_id: str, method: str = "") -> int:
    """A 63-bit seed derived from ``(seed, case_id, method)`` by SHA-256 (stable across Python runs)."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{case_id}\x1f{method}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def case_generator(
    seed: int, case_id: str, method: str = "", device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator for one case and method, on ``device``."""
    g = torch.Generator(device=device)
    g.manual_seed(case_seed(seed, case_id, method))
    return g


def case_numpy_rng(seed: int, case_id: str, method: str = "") -> np.random.Generator:
    """A numpy generator for one case and method."""
    return np.random.default_rng(case_seed(seed, case_id, method))
