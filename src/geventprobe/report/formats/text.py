"""Plain text: what the terminal prints, without colour and ``WIDTH`` wide, then the facts.

For a log or an e-mail: the headline, the body and the verdict sentence as a
``WIDTH``-column terminal draws them (with ``-v``, every figure), then the findings
paragraph, the appendix (calibration, the workers' facts, server, machine, command) and
where the report came from. Every line fits in ``WIDTH`` columns; none ends in blanks.
The reproductions (the harness) are in the Markdown and HTML reports (the footer says so).
"""

from __future__ import annotations

import io
import textwrap

from rich.console import Console

from geventprobe.report.document import (
    Document,
    Facts,
    Pairs,
    Paragraph,
    Verbatim,
    view,
)
from geventprobe.report.formats import console as draw
from geventprobe.report.formats.interface import Format

WIDTH = 100
"""Columns: what a log or an e-mail shows without wrapping."""


def _title(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _wrap(line: str) -> list[str]:
    """One ``key: value`` line, wrapped to ``WIDTH`` with a hanging indent."""
    return textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False) or [""]


class Text(Format):
    """Plain text, ``WIDTH`` columns."""

    name = "text"

    def render(self, doc: Document, verbose: bool = False) -> str:
        levels = view(verbose)
        buffer = io.StringIO()
        console = Console(file=buffer, width=WIDTH, color_system=None, force_terminal=False,
                          highlight=False, emoji=False)
        draw.paragraph(Paragraph(doc.headline, style="strong"), console)
        draw.blocks(doc.body, console, levels, verbose)
        if doc.verdict:
            draw.paragraph(Paragraph(doc.verdict_line), console)
        # rich pads every line to the console width: a file wants no trailing blanks.
        out = [line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines()]
        if doc.findings:
            out += [*_title("Verdict"), textwrap.fill(draw.plain(doc.findings), WIDTH)]
        for part in doc.appendix:
            if part.detail not in levels:
                continue
            out += _title(part.title)
            for block in part.blocks:
                if block.detail not in levels:
                    continue
                if isinstance(block, Paragraph):
                    lead = f"{block.lead} " if block.lead else ""
                    out.append(textwrap.fill(lead + draw.plain(block.text), WIDTH))
                elif isinstance(block, Pairs):
                    for k, v in block.rows:
                        out += _wrap(f"{k}: {v}")
                elif isinstance(block, Facts):
                    for fact, values in block.rows:
                        out += _wrap(f"{fact}: {draw.fact_line(block.builds, values)}")
                elif isinstance(block, Verbatim):
                    out += [wrapped for line in block.text.splitlines()
                            for wrapped in _wrap(line)]
        if doc.footer:
            out += ["", *_wrap(draw.plain(doc.footer))]
        return "\n".join(out) + "\n"
