"""``--device``: the torch device a stage computes on (shared by every stage that runs a model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from uqseg_cli.errors import UqsegError

if TYPE_CHECKING:  # torch is imported when a device is resolved: listing the commands must stay light
    import torch


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda if available else cpu; validates `cuda[:N]` against the machine."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UqsegError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UqsegError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise UqsegError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")


def apply_threads(threads: int, torch_too: bool = True) -> None:
    """``threads`` (``--threads N``): limit torch's intra-op threads and the BLAS/OpenMP pools NumPy and SciPy
    use (0: leave).

    Every stage's ``run`` applies its ``options.threads`` first, so a Python caller gets what the CLI gets."""
    if not threads:
        return
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=int(threads))
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if torch_too:
        import torch

        torch.set_num_threads(int(threads))
