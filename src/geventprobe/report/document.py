"""A report as a format-neutral document: what it says, in the order it says it.

Built once from a record (``report.run``, ``report.comparison``, ``report.bisection``);
each format in ``report.formats`` only supplies the syntax. A ``Document`` has slots
(headline, verdict sentence, findings paragraph, body, appendix, footer) and the body is a
list of blocks. Every block carries a ``detail``: which views show it.

- ``SUMMARY``: every format; what the terminal prints after a run.
- ``VERBOSE``: the terminal and the text report with ``-v``; always in Markdown and HTML.
- ``REFERENCE``: only the reference documents (Markdown, HTML), which a maintainer reads
  at leisure: per-worker figures, the rules that did not fire, the reproductions.

A table's columns carry an *importance* so a narrow layout knows which to keep, and a
cell may carry a shorter form for it: the 80-column layout is one decision of the
console drawing, the content is the same everywhere. Inline text may hold `code` and
**bold** marks; a format without such syntax drops the bold marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from geventprobe.record import BuildResult

ALWAYS = 0
"""Importance of a column no layout may drop (build, verdict)."""
COMPACT = -1
"""Importance of a column shown only when some figure columns were dropped: it says in a
few words what the dropped columns would have shown (``wait× 8.06, hub 1.2 s``)."""

SUMMARY = "summary"
"""Shown by every format."""
VERBOSE = "verbose"
"""Shown by the terminal and text only with ``-v``; always by Markdown and HTML."""
REFERENCE = "reference"
"""Shown only by the reference documents (Markdown, HTML)."""


@dataclass(frozen=True)
class Cell:
    """One table cell."""

    text: str
    style: str | None = None
    """A meaning, not a colour: ``ok``, ``bad``, ``busy``, ``warn``, ``dim``, ``muted``
    (a figure that misleads: shown de-emphasised), ``strong``."""
    short: str | None = None
    """A shorter form a narrow layout may use (``3.3.8`` for ``psycopg 3.3.8``)."""


@dataclass(frozen=True)
class Column:
    """One table column."""

    name: str
    right: bool = False
    """Right-aligned (a figure)."""
    importance: int = ALWAYS
    """0: always shown; 1, 2, 3...: dropped highest first when the width is short;
    ``COMPACT``: only shown when a figure column was dropped."""
    wrap: bool = False
    """A free-text column a layout may wrap (never a name, verdict or figure)."""


@dataclass(frozen=True)
class Table:
    """A header and rows of cells, with an optional title and a caption (its legend)."""

    columns: list[Column]
    rows: list[list[Cell]]
    title: str | None = None
    caption: str | None = None
    key: int = 0
    """The column that names a row, for a layout that lists dropped figures per row."""
    detail: str = SUMMARY


@dataclass(frozen=True)
class Paragraph:
    """Running text, wrapped to the width by the format."""

    text: str
    lead: str | None = None
    """A lead-in (``cause:``), set apart in bold."""
    style: str | None = None
    indent: int = 0
    """Nesting (0: a paragraph of its own; 1: a line under a heading, like a list item)."""
    detail: str = SUMMARY


@dataclass(frozen=True)
class Heading:
    """A heading line, with the verdict it announces (its style)."""

    text: str
    style: str | None = None
    level: int = 3
    """2: a section of the report (``Causes and fixes``); 3: one build or control;
    4: one route (later: one task) of that build."""
    detail: str = SUMMARY


@dataclass(frozen=True)
class Facts:
    """Rows of facts, one column per build, most of them equal across the builds.

    A wide format shows a table; a narrow one writes each row as one line, naming the
    builds only where they differ (``libpq: binary: 18.6; c: 15.18``).
    """

    builds: list[str]
    rows: list[tuple[str, list[str]]]
    """(fact, one value per build); ``–`` for a value a build did not report."""
    detail: str = SUMMARY


@dataclass(frozen=True)
class Pairs:
    """``key: value`` rows (the server, the machine)."""

    rows: list[tuple[str, str]]
    detail: str = SUMMARY


@dataclass(frozen=True)
class Verbatim:
    """Text to copy as it is (a command line, a profile, a script)."""

    text: str
    language: str = ""
    title: str | None = None
    """A name shown with it (``repro_binary.py``); a reference format collapses a titled
    block under its title."""
    note: str | None = None
    """A word beside the title (the verdict a script reproduces)."""
    style: str | None = None
    """The note's meaning (``bad``...), as a cell's."""
    detail: str = SUMMARY


@dataclass(frozen=True)
class Charts:
    """The charts of a run: per build, hub lag over time and the ``SELECT 1`` spread.

    Drawn by ``report.charts`` (an HTML report embeds them, ``report --format png`` is
    them alone); a format that cannot show an image says how to get them.
    """

    builds: list[BuildResult]
    """The builds that have figures to draw."""
    blocking_fraction: float | None
    """The BLOCKING limit on hub lag, as a fraction of w (drawn as a line)."""
    started_at: str
    hint: str = ""
    """How to get them, for a format that cannot show an image."""
    detail: str = REFERENCE


@dataclass(frozen=True)
class Part:
    """A titled group of blocks: a section of the appendix, or a collapsed group."""

    title: str
    blocks: list[Block]
    collapsed: bool = False
    """A reference format folds it away (``<details>``): long, and rarely needed."""
    detail: str = SUMMARY


Block = Union[Table, Paragraph, Heading, Facts, Pairs, Verbatim, Charts, Part]


@dataclass(frozen=True)
class Document:
    """A whole report, in slots every format fills in its own order.

    The terminal prints the body and ends with the verdict sentence, where the eye lands
    after a run; the text and reference formats open with the headline, the verdict and
    the findings, then the body and the appendix.
    """

    headline: str
    verdict: str | None
    """One sentence: what the run found (the terminal's last line, with ``exit_code``)."""
    findings: str | None = None
    """One paragraph: the verdict's evidence, its cause, whether the detector was live, the
    setup (the text and reference formats)."""
    body: list[Block] = field(default_factory=list)
    appendix: list[Part] = field(default_factory=list)
    """The setup the report is read against: calibration, the workers' facts, server,
    machine, command, reproduction (the text and reference formats)."""
    footer: str | None = None
    """Where the report came from (the text and reference formats)."""
    verdict_style: str = "strong"
    """How the terminal sets the verdict sentence off (``warn``: an answer with a doubt)."""
    failed: bool = False
    """The report found a fault or could not judge: a format that colours the verdict colours
    it as bad."""
    exit_code: int | None = None
    """The exit code the command ends with, said after the verdict; None when the verdict
    says it itself. Its own slot: an output file that cannot be written makes a run exit 2
    whatever its verdicts, and the report says so without rewording the verdict."""

    @property
    def verdict_line(self) -> str | None:
        """The verdict sentence as every format prints it: ``<verdict>; exit N``."""
        if self.verdict is None or self.exit_code is None:
            return self.verdict
        return f"{self.verdict}; exit {self.exit_code}"


def view(verbose: bool, reference: bool = False) -> frozenset[str]:
    """The detail levels a format shows: the terminal's (with ``-v`` or not), or all."""
    if reference:
        return frozenset((SUMMARY, VERBOSE, REFERENCE))
    return frozenset((SUMMARY, VERBOSE) if verbose else (SUMMARY,))
