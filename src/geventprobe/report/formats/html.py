"""HTML: the reference report as one self-contained page (inline CSS, the charts as a PNG).

The same blocks, in the same order, as the Markdown report, plus the charts drawn into
the page. It loads nothing from the network, so it opens offline, from a CI artifact or
an e-mail attachment. Without matplotlib it says how to get the charts instead.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence

from geventprobe.report import charts as drawing
from geventprobe.report.document import (
    COMPACT,
    Block,
    Cell,
    Charts,
    Document,
    Facts,
    Heading,
    Pairs,
    Paragraph,
    Part,
    Table,
    Verbatim,
    view,
)
from geventprobe.report.formats.interface import Format

_ALL = view(verbose=True, reference=True)
_BADGES = ("ok", "bad", "busy", "warn", "dim")
"""Cell and heading styles drawn as a coloured badge (a verdict, a change, a check)."""
_CLASSES = {"dim": "legend", "warn": "note"}
"""Paragraph styles as a class: a legend is small and grey, a note stands out."""

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1320px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin-bottom: 4px; } h4 { font-size: 14px; margin-bottom: 4px; }
p.verdict { font-size: 15px; background: #f6f8fa; border-left: 4px solid #57606a;
            padding: 10px 14px; }
p.verdict.bad { border-left-color: #c62828; } p.verdict.good { border-left-color: #2e7d32; }
table { border-collapse: collapse; margin: 8px 0; }
div.scroll { overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.dim { color: #8c959f; font-style: italic; }
.badge { font-weight: 600; padding: 1px 6px; border-radius: 4px; white-space: nowrap; }
.ok { background: #dafbe1; color: #1a7f37; } .bad { background: #ffebe9; color: #c62828; }
.busy { background: #fbefff; color: #8e24aa; } .warn { background: #fff8c5; color: #9a6700; }
.dim { background: #eaeef2; color: #57606a; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; }
pre { background: #f6f8fa; padding: 10px 12px; overflow-x: auto; border-radius: 6px; }
pre code { background: none; padding: 0; }
.legend, footer { color: #57606a; font-size: 12.5px; }
img.charts { max-width: 100%; border: 1px solid #d0d7de; }
.note { background: #fff8c5; padding: 8px 12px; border-radius: 6px; }
"""


def inline(text: str) -> str:
    """Escape ``text`` and turn its `code` and **bold** marks into HTML."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _badge(text: str, style: str | None) -> str:
    if style in _BADGES:
        return f'<span class="badge {style}">{inline(text)}</span>'
    return inline(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]],
           right: Sequence[int] = ()) -> str:
    out = ['<div class="scroll"><table>',
           "<tr>" + "".join(f"<th>{inline(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells = []
        for n, c in enumerate(row):
            classes = [k for k, on in (("num", n in right), ("dim", c.style == "muted")) if on]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_badge(c.text, c.style)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _paragraph(p: Paragraph) -> str:
    text = inline(p.text)
    if p.style == "strong" and not p.lead:
        text = f"<strong>{text}</strong>"
    if p.lead:
        text = f"<strong>{inline(p.lead)}</strong> {text}"
    return text


def png_data(png: bytes) -> str:
    """The PNG as an ``<img>`` source."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class Html(Format):
    """One self-contained HTML page.

    ``draw_charts`` turns the document's charts into PNG bytes (``report.charts``);
    the golden tests pass a stand-in that returns fixed bytes, so the page they pin does
    not depend on matplotlib's version.
    """

    name = "html"

    def __init__(self, draw_charts: Callable[[Charts], bytes] | None = None):
        self.draw_charts = draw_charts or drawing.render_png

    def render(self, doc: Document, verbose: bool = False) -> str:
        verdict = []
        if doc.verdict:
            verdict.append(f"<strong>{inline(doc.verdict_line)}</strong>")
        if doc.findings:
            verdict.append(inline(doc.findings))
        body = [f"<h1>{inline(doc.headline)}</h1>"]
        if verdict:
            body.append(f'<p class="verdict {"bad" if doc.failed else "good"}">'
                        + "<br>\n".join(verdict) + "</p>")
        body += self.blocks(doc.body) + self.blocks(doc.appendix)
        if doc.footer:
            body.append(f"<footer><hr>{inline(doc.footer)}</footer>")
        title = html.escape(f"geventprobe report: {doc.verdict_line or doc.headline}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")

    def charts(self, block: Charts) -> str:
        """The charts as an image, or how to get them."""
        try:
            png = self.draw_charts(block)
        except drawing.ChartsUnavailable:
            return ('<p class="note">Charts (hub lag over time and <code>SELECT 1</code> '
                    "latency, per build) need matplotlib: <code>"
                    f"{html.escape(drawing.INSTALL_HINT)}</code>, then "
                    "<code>geventprobe report RESULT.json --format html</code> again.</p>")
        return (f'<img class="charts" alt="hub lag over time and SELECT 1 latency, per build" '
                f'src="{png_data(png)}">')

    def blocks(self, items: Sequence[Block]) -> list[str]:
        """The blocks as HTML elements; consecutive indented paragraphs make one list."""
        out: list[str] = []
        items_open = False
        for block in items:
            if block.detail not in _ALL:
                continue
            listed = isinstance(block, Paragraph) and block.indent > 0
            if items_open and not listed:
                out.append("</ul>")
                items_open = False
            if listed:
                if not items_open:
                    out.append("<ul>")
                    items_open = True
                out.append(f"<li>{_paragraph(block)}</li>")
            elif isinstance(block, Paragraph):
                css = _CLASSES.get(block.style or "")
                out.append(f'<p class="{css}">' if css else "<p>")
                out[-1] += _paragraph(block) + "</p>"
            elif isinstance(block, Heading):
                level = min(block.level, 6)
                out.append(f"<h{level}>{_badge(block.text, block.style)}</h{level}>")
            elif isinstance(block, Table):
                shown = [i for i, c in enumerate(block.columns) if c.importance != COMPACT]
                if block.title:
                    out.append(f"<p><strong>{inline(block.title)}</strong></p>")
                out.append(_table([block.columns[i].name for i in shown],
                                  [[row[i] for i in shown] for row in block.rows],
                                  [n for n, i in enumerate(shown) if block.columns[i].right]))
                if block.caption:
                    out.append(f'<p class="legend">{inline(block.caption)}</p>')
            elif isinstance(block, Pairs):
                out.append("<table>" + "".join(f"<tr><th>{inline(k)}</th><td>{inline(v)}</td>"
                                               "</tr>" for k, v in block.rows) + "</table>")
            elif isinstance(block, Facts):
                out.append(_table(["fact (inside the workers)", *block.builds],
                                  [[Cell(fact), *map(Cell, values)]
                                   for fact, values in block.rows]))
            elif isinstance(block, Verbatim):
                code = f"<pre><code>{html.escape(block.text)}</code></pre>"
                if block.title:
                    note = f": {_badge(block.note, block.style)}" if block.note else ""
                    code = (f"<details><summary><code>{html.escape(block.title)}</code>{note}"
                            f"</summary>{code}</details>")
                out.append(code)
            elif isinstance(block, Charts):
                out.append(self.charts(block))
            elif isinstance(block, Part):
                inner = self.blocks(block.blocks)
                if block.collapsed:
                    out += [f"<details><summary>{inline(block.title)}</summary>", *inner,
                            "</details>"]
                else:
                    out += [f"<h2>{inline(block.title)}</h2>", *inner]
        if items_open:
            out.append("</ul>")
        return out
