"""A report as a format-neutral document: sections, tables, paragraphs, key-values, code.

The content (what a run found, in which order, with which figures) is built once from
the record by ``content``; each format (``terminal`` at a given width, ``text``,
``markdown``, ``html``) only supplies the syntax. A table's columns carry an
*importance* so a narrow layout knows which to keep, and a cell may carry a shorter
form for it: the 80-column layout is one decision in ``terminal``, the content is the
same everywhere.

Inline text may hold `code` and **bold** the way the Markdown report writes them; a
renderer that has no such syntax drops the marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

ALWAYS = 0
"""Importance of a column no layout may drop (build, verdict)."""
COMPACT = -1
"""Importance of a column shown only when some figure columns were dropped: it says in a
few words what the dropped columns would have shown (``wait× 8.06, hub 1.2 s``)."""


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


@dataclass(frozen=True)
class Paragraph:
    """Running text, wrapped to the width by the renderer."""

    text: str
    lead: str | None = None
    """A bold lead-in (``cause:``); Markdown writes it ``**Cause:**``."""
    style: str | None = None
    indent: int = 0
    """Nesting (0: a paragraph of its own; 1: a line under a heading, like a list item)."""
    verbose: bool = False
    """Only shown with ``-v/--verbose`` in a terminal (Markdown and HTML show it)."""


@dataclass(frozen=True)
class KeyValues:
    """A list of ``key: value`` pairs."""

    pairs: list[tuple[str, str]]


@dataclass(frozen=True)
class Code:
    """Text to copy as it is (a command, a profile, a script)."""

    text: str
    language: str = ""


@dataclass(frozen=True)
class Heading:
    """A heading line inside a section, with the verdict it announces."""

    text: str
    style: str | None = None


Block = Union["Section", Table, Paragraph, KeyValues, Code, Heading]


@dataclass(frozen=True)
class Section:
    """A titled group of blocks (a title of None: just the blocks)."""

    title: str | None
    blocks: list[Block] = field(default_factory=list)
    verbose: bool = False
    """Only shown with ``-v/--verbose`` in a terminal."""


def walk(blocks: list[Block]):
    """Every block, depth first (sections included)."""
    for block in blocks:
        yield block
        if isinstance(block, Section):
            yield from walk(block.blocks)


def tables(blocks: list[Block]) -> list[Table]:
    """Every table of a document, in order."""
    return [b for b in walk(blocks) if isinstance(b, Table)]
