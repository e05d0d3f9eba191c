"""Option types shared by the commands: choices that help and shell completion list."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def complete_list(values: Sequence[str]) -> Callable[[str], list[str]]:
    """Shell completion of a comma list: ``--measure entropy,mu<TAB>`` → ``entropy,mutual_information``."""

    def complete(incomplete: str) -> list[str]:
        head, _, tail = incomplete.rpartition(",")
        given = set(head.split(",")) if head else set()
        prefix = f"{head}," if head else ""
        return [prefix + v for v in values if v.startswith(tail) and v not in given]

    return complete


def choices_help(values: Sequence[str]) -> str:
    """``"a, b or c"`` for a help text."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
