"""report.html: the course report's Markdown as one self-contained page (figures embedded
as base64 PNG, no network) that prints well to PDF from a browser (A4, figures and
table rows never split across pages, tables in a small font)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """
body { font: 11pt/1.45 Georgia, 'DejaVu Serif', serif; max-width: 60em; margin: 2em auto;
       padding: 0 1em; color: #111; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #999; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; font: 8.5pt/1.3 'DejaVu Sans', Arial, sans-serif;
        margin: 0.6em 0 1em; }
th, td { border: 1px solid #bbb; padding: 2px 5px; vertical-align: top; }
th { background: #eee; }
td { font-variant-numeric: tabular-nums; }
td[style*="right"] { white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5em auto 1em; }
code { font-size: 0.92em; background: #f3f3f3; padding: 0 2px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  h2 { break-after: avoid; } img, tr { break-inside: avoid; }
  img { max-height: 11cm; width: auto; }
}
"""

_IMG = re.compile(r'<img src="([^"]+)" alt="([^"]*)"\s*/?>')
_CELL = re.compile(r"<td([^>]*)>(.*?)</td>", re.S)


def _keep_numbers_whole(body: str) -> str:
    """A cell's "mean ± sd" never breaks at its spaces ("6.2683 ± 0.0295" on two lines
    reads as two numbers)."""
    return _CELL.sub(lambda m: f"<td{m.group(1)}>{m.group(2).replace(' ± ', '&nbsp;±&nbsp;')}</td>",
                     body)


def _embed(body: str, folder: Path) -> str:
    """Each <img src="x.png"> of the folder becomes a data: URI; a missing file stays a
    visible note rather than a broken link."""
    def repl(m: re.Match) -> str:
        path = folder / html.unescape(m.group(1))
        if path.suffix != ".png" or not path.is_file():
            return f"<p><em>(figure {html.escape(m.group(1))} missing)</em></p>"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{m.group(2)}">'
    return _IMG.sub(repl, body)


# the hand-in (engine.report.brief): denser, so methods, results, three figures and the
# temperature table print on at most 4 A4 pages
BRIEF_CSS = """
body { font-size: 10pt; line-height: 1.35; }
h1 { font-size: 1.35em; } h2 { font-size: 1.12em; margin-top: 1em; }
table { font-size: 7.5pt; }
@page { size: A4; margin: 12mm 10mm; }
@media print { body { font-size: 9.5pt; } img { max-height: 8.2cm; } }
"""


def markdown_to_html(md: str, title: str, folder: Path, brief: bool = False) -> str:
    from markdown_it import MarkdownIt
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}{BRIEF_CSS if brief else ''}"
            "</style></head>\n<body>\n"
            + _embed(_keep_numbers_whole(body), folder) + "</body></html>\n")
