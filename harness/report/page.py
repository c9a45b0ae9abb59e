"""HTML building blocks of the report: escaping, tables, sections, the page itself.

The page embeds plotly.js once, inline, so the file opens without a network; every
figure is a ``<div>`` plus a small script that draws into it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from harness.units import fmt_ms

_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "scale": 2}}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f3b57;color:#fff;padding:14px 24px}
header h1{margin:0 0 4px 0;font-size:22px}
header .meta{font-size:13px;opacity:.9}
nav{background:#fff;border-bottom:1px solid #ddd;padding:6px 24px;position:sticky;top:0;
z-index:10;font-size:14px}
nav a{margin-right:14px;color:#1f3b57;text-decoration:none}
main{padding:8px 24px 40px 24px;max-width:1280px}
section{background:#fff;border:1px solid #e2e2e2;border-radius:6px;margin:16px 0;
padding:8px 16px 16px 16px}
h2{font-size:18px;margin:10px 0}
h3{font-size:15px;margin:12px 0 6px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f3f5f7}
td.l,th.l{text-align:left}
.note{color:#555;font-size:13px}
.badge{display:inline-block;border-radius:4px;padding:1px 7px;font-size:12px;color:#fff}
.pass,.ok,.info,.faster{background:#2e7d32}
.fail,.critical,.error,.slower{background:#c62828}
.warning,.inconclusive{background:#ef6c00}
.invalid,.unknown,.neutral{background:#757575}
.finding{border-left:4px solid #bbb;padding:4px 10px;margin:8px 0}
.finding.critical{border-color:#c62828;background:#fff5f5}
.finding.warning{border-color:#ef6c00;background:#fffaf2}
.finding.info{border-color:#2e7d32;background:#f6fbf6}
.finding ul{margin:4px 0 4px 18px;padding:0}
.plot{min-height:260px}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def badge(text: str, kind: str | None = None) -> str:
    cls = (kind or text).replace(" ", "-").lower()
    return f'<span class="badge {esc(cls)}">{esc(text)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1,
          raw_columns: Sequence[int] = (), left_columns: Sequence[int] = ()) -> str:
    """A table; the first ``left`` columns and ``left_columns`` align left (text, not
    numbers); ``raw_columns`` hold trusted HTML."""
    lefts = set(range(left)) | set(left_columns)
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if i in lefts else ""}">{esc(h)}</th>'
            for i, h in enumerate(headers)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            body = str(cell) if i in raw_columns else esc(cell)
            out.append(f'<td class="{"l" if i in lefts else ""}">{body}</td>')
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def figure_html(fig: go.Figure, div_id: str) -> str:
    # The div gets the layout's height: plotly's default (100 %) collapses inside a section.
    height = fig.layout.height or 450
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{div_id}",
                       config=_PLOT_CONFIG, default_height=f"{height}px")
    return f'<div class="plot">{body}</div>'


def ms(us: float | None, digits: int = 3) -> str:
    return fmt_ms(us, digits)


@dataclass(frozen=True)
class Section:
    """One titled block of the page; ``body`` is trusted HTML built with the helpers above."""

    id: str
    title: str
    body: str
    nav: str | None = None  # a shorter label for the link bar


def render_page(title: str, meta_lines: Sequence[str], sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.nav or s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{esc(title)}</title>",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<style>{CSS}</style>",
        # Inline, once: the report must open with no network (air-gapped CI artifacts).
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script>",
        "</head><body>",
        f"<header><h1>{esc(title)}</h1>",
        *(f'<div class="meta">{esc(line)}</div>' for line in meta_lines),
        f"</header><nav>{nav}</nav><main>",
    ]
    for s in sections:
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>')
    parts.append("</main></body></html>")
    return "\n".join(parts)
