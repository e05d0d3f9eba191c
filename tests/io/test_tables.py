"""``io.tables.TableStream``: a table written piece by piece is byte for byte the table ``write_table`` writes."""

from __future__ import annotations

import pandas as pd

from uqseg_cli.io.tables import TableStream, write_table


def test_table_stream_writes_what_write_table_writes(tmp_path, capsys):
    cols = ["case", "k", "x", "name"]
    parts = [pd.DataFrame([("a", 1, 0.1, "x,y"), ("b", 2, 1e-9, 'q"t')], columns=cols),
             pd.DataFrame([("c", 3, float("nan"), "z")], columns=cols),
             pd.DataFrame([("d", 4, 1234.0, "")], columns=cols)]
    write_table(pd.concat(parts, ignore_index=True), tmp_path / "ref.csv")
    s = TableStream(tmp_path / "t.csv", cols)
    for p in parts:
        s.write(p)
    assert not (tmp_path / "t.csv").exists()  # nothing at the target before commit
    s.commit()
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.csv", "t.csv"]
    # an empty table is its header, as write_table writes it
    write_table(pd.DataFrame(columns=cols), tmp_path / "empty_ref.csv")
    TableStream(tmp_path / "empty.csv", cols).commit()
    assert (tmp_path / "empty.csv").read_bytes() == (tmp_path / "empty_ref.csv").read_bytes()
    # abort keeps what was there
    (tmp_path / "keep.csv").write_text("old\n")
    s = TableStream(tmp_path / "keep.csv", cols)
    s.write(parts[0])
    s.abort()
    assert (tmp_path / "keep.csv").read_text() == "old\n" and not list(tmp_path.glob(".keep.csv.tmp-*"))
    # "-": standard output at commit
    capsys.readouterr()
    s = TableStream("-", cols)
    for p in parts:
        s.write(p)
    assert capsys.readouterr().out == ""
    s.commit()
    assert capsys.readouterr().out == (tmp_path / "ref.csv").read_text()
