"""A static one-page ``report.html`` that links the figures of `uqseg explain` with summary tables.

No server, no JavaScript, no external assets: every ``src``/``href`` is a path relative to the report's folder,
and :func:`write_report` refuses to write a report that references a file that does not exist.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import pandas as pd

from uqseg_cli.io.atomic import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; }
figure img { max-width: 540px; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #555; max-width: 540px; }
p.note { color: #555; font-size: 0.9em; }
p.callout { padding: 0.6em 0.9em; border-left: 5px solid #888; background: #f5f5f5; font-size: 1.05em; }
p.callout.fail { border-color: #c62828; background: #fdecea; }
p.callout.weak { border-color: #ef8f00; background: #fff4e0; }
p.callout.ok { border-color: #2e7d32; background: #edf7ed; }
"""


@dataclass
class Figure:
    """A figure in the report: ``path`` relative to the report's folder; ``link`` optional (e.g. the PDF)."""

    path: str
    caption: str = ""
    link: str | None = None


@dataclass
class Section:
    """One section: a heading, optional paragraph, tables ``(caption, DataFrame)``, figures and file links."""

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (relative path, label)
    callout: str = ""  # a headline sentence shown first, boxed
    level: str = ""  # its colour: ok, weak, fail


def _href(path: str) -> str:
    return html.escape(quote(Path(path).as_posix()), quote=True)


def _table_html(caption: str, df: pd.DataFrame) -> str:
    body = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0, escape=True)
    cap = f"<p><b>{html.escape(caption)}</b></p>\n" if caption else ""
    return cap + body


def render_report(title: str, sections: list[Section], subtitle: str = "") -> str:
    """The HTML text of the report (all user strings escaped, all paths URL-quoted)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{html.escape(subtitle)}</p>')
    if len(sections) > 1:
        toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
        parts.append(f"<ul>{toc}</ul>")
    for i, sec in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(sec.title)}</h2>')
        if sec.callout:
            level = sec.level if sec.level in ("ok", "weak", "fail") else ""
            cls = f"callout {level}".strip()
            parts.append(f'<p class="{cls}" id="headline">{html.escape(sec.callout)}</p>')
        if sec.text:
            parts.append(f'<p class="note">{html.escape(sec.text)}</p>')
        for caption, df in sec.tables:
            parts.append(_table_html(caption, df))
        if sec.links:
            items = "".join(f'<li><a href="{_href(p)}">{html.escape(label)}</a></li>' for p, label in sec.links)
            parts.append(f"<ul>{items}</ul>")
        for fig in sec.figures:
            img = f'<img src="{_href(fig.path)}" alt="{html.escape(fig.caption or fig.path)}" loading="lazy">'
            target = fig.link or fig.path
            cap = html.escape(fig.caption)
            if fig.link:
                cap += f' (<a href="{_href(fig.link)}">{html.escape(Path(fig.link).suffix.lstrip(".").upper())}</a>)'
            parts.append(f'<figure><a href="{_href(target)}">{img}</a><figcaption>{cap}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


class _RefParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


def referenced_files(html_text: str) -> list[str]:
    """Local files referenced by ``src``/``href`` (decoded, relative); in-page anchors and URLs excluded."""
    p = _RefParser()
    p.feed(html_text)
    out = []
    for ref in p.refs:
        u = urlparse(ref)
        if u.scheme or u.netloc or ref.startswith("#"):
            continue
        out.append(unquote(u.path))
    return out


def missing_references(report: Path) -> list[str]:
    """References of ``report`` (an HTML file) to files that do not exist, relative to its folder."""
    report = Path(report)
    return [r for r in referenced_files(report.read_text(encoding="utf-8")) if not (report.parent / r).is_file()]


def write_report(path: Path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    """Render and write the report atomically; raises ``FileNotFoundError`` if it would link a missing file."""
    path = Path(path)
    text = render_report(title, sections, subtitle)
    missing = [r for r in referenced_files(text) if not (path.parent / r).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: the report would link missing files: {', '.join(missing[:5])}")
    return atomic_write_text(path, text)
