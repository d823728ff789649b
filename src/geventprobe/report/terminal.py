"""The terminal: a ``document`` drawn at the console's width, with rich.

The one place that decides the narrow layout. A table keeps every column when it fits;
otherwise it drops columns by importance (the ``SELECT 1`` latency first, the deciding
figures last, replaced by the few-words ``evidence`` column), then uses the cells' short
forms. Nothing is cut with an ellipsis: running text is wrapped to the width, and a
table that still does not fit folds its cells. Colour only repeats what the words say
(the verdict, ✓ / ✗). With ``verbose`` the figures a narrow table dropped follow it,
row by row, and the legend and timings are shown.
"""

from __future__ import annotations

import re
import textwrap

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

from geventprobe.record import RunResult
from geventprobe.report import content
from geventprobe.report.document import (
    COMPACT,
    Block,
    Code,
    Heading,
    KeyValues,
    Paragraph,
    Section,
    Table,
)

STYLES = {"ok": "bold green", "bad": "bold red", "busy": "bold magenta", "warn": "bold yellow",
          "dim": "dim", "muted": "dim", "strong": "bold"}
DECIDING = 2
"""Columns of importance 1..DECIDING hold the deciding figures: when one is dropped, the
``COMPACT`` column says what they showed."""

_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def plain(text: str) -> str:
    """Markdown's **bold** marks dropped (`code` keeps its backticks: they delimit it)."""
    return _BOLD.sub(lambda m: m.group(1), text)


def _style(name: str | None) -> str:
    return STYLES.get(name or "", "")


# ---------------------------------------------------------------- tables


def _layouts(t: Table) -> list[tuple[list[int], bool]]:
    """Candidate layouts, widest first: (the columns shown, whether cells use short forms)."""
    cols = t.columns
    full = [i for i, c in enumerate(cols) if c.importance != COMPACT]
    out = [(full, False), (full, True)]
    for cutoff in sorted({c.importance for c in cols if c.importance > 0}, reverse=True):
        keep = [i for i, c in enumerate(cols) if 0 <= c.importance < cutoff]
        dropped = [c for c in cols if c.importance >= cutoff]
        if any(0 < c.importance <= DECIDING for c in dropped):
            keep = [i for i, c in enumerate(cols) if i in keep or c.importance == COMPACT]
        out += [(keep, False), (keep, True)]
    return out


def _rich_table(t: Table, shown: list[int], short: bool, fold: bool) -> RichTable:
    rt = RichTable(title=t.title, title_justify="left", title_style="bold", caption=t.caption,
                   caption_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                   show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for i in shown:
        c = t.columns[i]
        rt.add_column(c.name, justify="right" if c.right else "left",
                      no_wrap=not (fold or c.wrap), overflow="fold")
    for row in t.rows:
        cells = []
        for i in shown:
            cell = row[i]
            text = cell.short if short and cell.short else cell.text
            cells.append(Text(plain(text), style=_style(cell.style)))
        rt.add_row(*cells)
    return rt


def _fits(console: Console, rt: RichTable, width: int) -> bool:
    wide = console.options.update_width(10_000)
    return Measurement.get(console, wide, rt).maximum <= width


def render_table(t: Table, console: Console, verbose: bool = False) -> None:
    """The table at the console's width, dropping and shortening what does not fit."""
    width = console.width
    layouts = _layouts(t)
    chosen = None
    for shown, short in layouts:
        rt = _rich_table(t, shown, short, fold=False)
        if _fits(console, rt, width):
            chosen = (shown, rt)
            break
    if chosen is None:  # nothing fits: fold cells rather than cut them
        shown, short = layouts[-1]
        chosen = (shown, _rich_table(t, shown, short, fold=True))
    shown, rt = chosen
    dropped = [i for i, c in enumerate(t.columns)
               if i not in shown and c.importance != COMPACT]
    if dropped and not verbose and rt.caption is not None:
        rt.caption = f"{rt.caption}. -v: every figure"
    elif dropped and not verbose:
        rt.caption = "-v or a wider terminal: every figure"
    console.print(rt)
    if dropped and verbose:  # the figures the width left out, row by row
        for row in t.rows:
            pairs = "; ".join(f"{t.columns[i].name} {plain(row[i].text)}" for i in dropped
                              if row[i].text != "–")
            if pairs:
                _paragraph(Paragraph(pairs, lead=f"{plain(row[t.key].text)}:", indent=1),
                           console)


# ---------------------------------------------------------------- text


def _paragraph(p: Paragraph, console: Console) -> None:
    width = console.width
    first = "  " * p.indent
    lead = f"{p.lead} " if p.lead else ""
    lines = textwrap.wrap(lead + plain(p.text), width=max(20, width), initial_indent=first,
                          subsequent_indent=first + "  ", break_on_hyphens=False) or [""]
    for n, line in enumerate(lines):
        text = Text(style=_style(p.style))
        if n == 0 and lead:
            start = len(first)
            text.append(line[:start])
            text.append(line[start:start + len(lead)], style="bold")
            text.append(line[start + len(lead):])
        else:
            text.append(line)
        console.print(text, soft_wrap=True)


def render_blocks(blocks: list[Block], console: Console, verbose: bool = False) -> None:
    """Draw a document's blocks at the console's width."""
    for block in blocks:
        if isinstance(block, Section):
            if block.verbose and not verbose:
                continue
            if block.title:
                _paragraph(Paragraph(block.title, style="strong"), console)
            render_blocks(block.blocks, console, verbose)
        elif isinstance(block, Table):
            render_table(block, console, verbose)
        elif isinstance(block, Paragraph):
            if not block.verbose or verbose:
                _paragraph(block, console)
        elif isinstance(block, Heading):
            _paragraph(Paragraph(block.text, style=block.style or "strong"), console)
        elif isinstance(block, KeyValues):
            for k, v in block.pairs:
                _paragraph(Paragraph(v, lead=f"{k}:", indent=1), console)
        elif isinstance(block, Code):
            for line in block.text.splitlines():
                console.print(Text(line), soft_wrap=True)


def render(result: RunResult, console: Console, verbose: bool = False) -> None:
    """Print what ``run`` or ``calibrate`` found, at the console's width."""
    render_blocks(content.run_document(result), console, verbose)
