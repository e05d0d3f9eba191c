"""The HTML report references only files that exist, escapes text, and round-trips odd file names."""

from __future__ import annotations

import pandas as pd
import pytest

from uqseg_cli.explain.report import (
    Figure,
    Section,
    missing_references,
    referenced_files,
    render_report,
    write_report,
)


def test_report_links_existing_files_only(tmp_path):
    (tmp_path / "gradcam").mkdir()
    (tmp_path / "gradcam" / "case 1.png").write_bytes(b"x")
    (tmp_path / "gradcam" / "case 1.pdf").write_bytes(b"x")
    (tmp_path / "umap.csv").write_text("case,x,y\n")
    table = pd.DataFrame({"case": ["<b>a</b>", "b"], "dice": [0.91234567, None]})
    sections = [
        Section("Summary", text="R² & Pearson", tables=[("scores", table)], links=[("umap.csv", "UMAP table")]),
        Section("Grad-CAM", figures=[Figure("gradcam/case 1.png", "case 1", link="gradcam/case 1.pdf")]),
    ]
    out = write_report(tmp_path / "report.html", "uqseg <explain>", sections)
    text = out.read_text()
    assert missing_references(out) == []
    refs = referenced_files(text)
    assert sorted(set(refs)) == ["gradcam/case 1.pdf", "gradcam/case 1.png", "umap.csv"]
    assert "<b>a</b>" not in text and "&lt;b&gt;a&lt;/b&gt;" in text
    assert "uqseg &lt;explain&gt;" in text
    assert "0.9123" in text
    assert 'href="#s1"' in text  # the table of contents uses in-page anchors, not files
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_file_is_refused_and_detected(tmp_path):
    sections = [Section("x", figures=[Figure("nope.png", "missing")])]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path / "report.html", "t", sections)
    assert not (tmp_path / "report.html").exists()
    page = tmp_path / "other.html"
    page.write_text(render_report("t", sections) + '<a href="https://example.org/a.png">ext</a>')
    assert missing_references(page) == ["nope.png", "nope.png"]  # <img src> and its <a href>
