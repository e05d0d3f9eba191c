"""Parsing of the small text values options take (comma lists, sizes); one implementation for every stage."""

from __future__ import annotations

from collections.abc import Iterable

from uqseg_cli.errors import UqsegError


def split_list(values: Iterable[object] | str | None, unique: bool = True) -> list[str]:
    """``--opt a,b --opt c`` (or ``"a, b"``) → ``["a", "b", "c"]``: stripped, empty items dropped, order kept and
    (``unique``) repeats dropped."""
    if isinstance(values, str):
        values = [values]
    out = [x.strip() for v in values or [] for x in str(v).split(",") if x.strip()]
    return list(dict.fromkeys(out)) if unique else out


def parse_size(text: str | None, what: str, n: int | None = None, minimum: int = 1) -> list[int] | None:
    """``"192x256"`` or ``"192,256"`` → ``[192, 256]``; one number is repeated to ``n`` axes when ``n`` is given.

    ``None`` stays ``None``. ``what`` names the option in the error (e.g. ``"--input-size"``); every size must be at
    least ``minimum`` and, with ``n``, there must be ``n`` of them.
    """
    if text is None:
        return None
    parts = [p for p in str(text).lower().replace("x", ",").split(",") if p.strip()]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise UqsegError(f"{what} {text!r}: expected integers like 192x256 (or one number for every axis)") from None
    if not vals:
        raise UqsegError(f"{what} {text!r}: expected integers like 192x256 (or one number for every axis)")
    if n is not None and len(vals) == 1:
        vals = vals * n
    if n is not None and len(vals) != n:
        raise UqsegError(f"{what} {text!r}: expected {n} sizes, e.g. {'x'.join(['128'] * n)}")
    if any(v < minimum for v in vals):
        raise UqsegError(f"{what} {text!r}: every size must be at least {minimum}")
    return vals


def parse_window(text: str | None) -> list[float] | None:
    """``"-200,300"`` → [-200.0, 300.0] (lo < hi); the CT intensity window of ``--ct-window``."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UqsegError(f"--ct-window {text!r}: expected LO,HI in HU, e.g. --ct-window=-200,300") from None
    if not lo < hi:
        raise UqsegError(f"--ct-window {text!r}: LO must be below HI")
    return [lo, hi]
