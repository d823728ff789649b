"""The terminal: a document drawn at the console's width, in colour when it is a terminal.

The headline, the body (with ``-v``: the legend, every figure a narrow table dropped,
where the time went, and a baseline's details) and, last, the verdict sentence, where
the eye lands after a run. The findings paragraph and the appendix are for the files.
"""

from __future__ import annotations

import io

from rich.console import Console

from geventprobe.report.document import Document, Paragraph, view
from geventprobe.report.formats import console as draw
from geventprobe.report.formats.interface import Format


class Terminal(Format):
    """A document on a rich console (its width, its colours)."""

    name = "terminal"

    def __init__(self, console: Console):
        self.console = console

    def show(self, doc: Document, verbose: bool = False) -> None:
        """Print the document on the console."""
        c = self.console
        draw.paragraph(Paragraph(doc.headline, style="strong"), c)
        draw.blocks(doc.body, c, view(verbose), verbose)
        if doc.verdict:
            draw.paragraph(Paragraph(doc.verdict_line, style=doc.verdict_style), c)

    def render(self, doc: Document, verbose: bool = False) -> str:
        """The document as the console would print it (with its colour codes, if any)."""
        with self.console.capture() as captured:
            self.show(doc, verbose)
        return captured.get()


PIPE_WIDTH = 100
"""Columns of the report in a pipe or a file (``cli.common.REPORT_WIDTH``)."""


def plain_text(result, verbose: bool = False) -> str:
    """``result`` (a ``RunResult``) as ``geventprobe run`` prints it into a pipe: no colour,
    ``PIPE_WIDTH`` columns (``RunResult.explain``)."""
    from geventprobe.report import run

    console = Console(file=io.StringIO(), width=PIPE_WIDTH, color_system=None,
                      force_terminal=False, highlight=False)
    Terminal(console).show(run.document(result), verbose)
    return console.file.getvalue()
