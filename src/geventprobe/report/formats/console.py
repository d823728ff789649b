"""Blocks drawn on a rich console at its width: what the terminal and text formats share.

Not a format: the drawing both use. The one place that decides the narrow layout. A
table keeps every column when it fits; otherwise it drops columns by importance (the
``SELECT 1`` latency first, the deciding figures last, replaced by the few-words
``evidence`` column), then uses the cells' short forms. Nothing is cut with an ellipsis:
running text is wrapped to the width, and a table that still does not fit folds its
cells. Colour only repeats what the words say (the verdict, ✓ / ✗). With ``verbose`` the
figures a narrow table dropped follow it, row by row.
"""

from __future__ import annotations

import re
import textwrap

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

from geventprobe.report.document import (
    COMPACT,
    Block,
    Facts,
    Heading,
    Pairs,
    Paragraph,
    Part,
    Table,
    Verbatim,
)

STYLES = {"ok": "bold green", "bad": "bold red", "busy": "bold magenta", "warn": "bold yellow",
          "dim": "dim", "muted": "dim", "strong": "bold"}
DECIDING = 2
"""Columns of importance 1..DECIDING hold the deciding figures: when one is dropped, the
``COMPACT`` column says what they showed."""

_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def plain(text: str) -> str:
    """The **bold** marks dropped (`code` keeps its backticks: they delimit it)."""
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


def table(t: Table, console: Console, verbose: bool = False) -> None:
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
                paragraph(Paragraph(pairs, lead=f"{plain(row[t.key].text)}:", indent=1),
                          console)


# ---------------------------------------------------------------- text


def paragraph(p: Paragraph, console: Console) -> None:
    """Running text wrapped to the console's width, its lead in bold, with a hanging indent."""
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


def fact_line(builds: list[str], values: list[str]) -> str:
    """A row of facts as one value, naming the builds only where they differ:
    ``3.3.8 (binary, c, python)``, ``binary: 18.6; c: 15.18``."""
    known = [(build, v) for build, v in zip(builds, values) if v != "–"]
    if len(set(values)) == 1 or not known:
        return values[0]
    if len({v for _, v in known}) == 1:  # the builds that have it agree
        return f"{known[0][1]} ({', '.join(build for build, _ in known)})"
    return "; ".join(f"{build}: {v}" for build, v in known)


def blocks(items: list[Block], console: Console, levels: frozenset[str],
           verbose: bool = False) -> None:
    """Draw the blocks a view with ``levels`` shows, at the console's width."""
    for block in items:
        if block.detail not in levels:
            continue
        if isinstance(block, Table):
            table(block, console, verbose)
        elif isinstance(block, Paragraph):
            paragraph(block, console)
        elif isinstance(block, Heading):
            paragraph(Paragraph(block.text, style=block.style or "strong"), console)
        elif isinstance(block, Part):
            paragraph(Paragraph(block.title, style="strong"), console)
            blocks(block.blocks, console, levels, verbose)
        elif isinstance(block, Pairs):
            for k, v in block.rows:
                paragraph(Paragraph(v, lead=f"{k}:", indent=1), console)
        elif isinstance(block, Facts):
            for fact, values in block.rows:
                paragraph(Paragraph(fact_line(block.builds, values), lead=f"{fact}:",
                                    indent=1), console)
        elif isinstance(block, Verbatim):
            for line in block.text.splitlines():
                console.print(Text(line), soft_wrap=True)
        # Charts: an image; a console shows none (the reference formats say how to get it).
