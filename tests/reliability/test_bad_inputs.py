"""Issue 12: the bad-input matrix (tests/reliability/matrix.py), one row per test, through the real entry point.

Each row asserts the exit code, the message (one line for usage errors), no traceback, and that no input and no
earlier output changed (sha256 of every file before and after).
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run_captured
from tests.reliability.matrix import ROWS
from tests.reliability.world import hashes


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, site, capsys):
    if row.setup is not None:
        row.setup(site)
    capsys.readouterr()
    before = hashes(site)
    code, out, err = run_captured(capsys, *row.args)
    assert "Traceback" not in err and "Traceback" not in out
    assert code == row.code, f"exit {code}, expected {row.code}; stderr:\n{err}"
    assert re.search(row.msg, err), f"{row.msg!r} not in stderr:\n{err}"
    if row.code == 2 and row.one_line:
        assert err.count("\n") == 1 and err.startswith("uqseg: error: "), err
    for text in row.never:
        assert text not in err, err
    after = hashes(site)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"inputs or earlier outputs changed: {changed}"


def test_matrix_covers_every_item():
    items = {r.item for r in ROWS}
    assert {"1", "2", "4", "8", "9", "10", "11", "13", "17"} <= items
    assert len(ROWS) >= 40
