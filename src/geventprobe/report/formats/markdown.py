"""GitHub-flavoured Markdown: the reference report, for an issue attachment or a job summary.

The headline, the verdict sentence and the findings paragraph, then every block of the
body (the rules that did not fire, the per-worker figures and the timings included),
then the appendix and the footer. Long parts (per-worker figures, timings, each
reproduction script) fold into ``<details>``. A table shows every column but the narrow
layouts' ``evidence`` stand-in; a figure that misleads is in italics.
"""

from __future__ import annotations

from collections.abc import Sequence

from geventprobe.report.document import (
    COMPACT,
    Block,
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


def cell(text: str) -> str:
    """A table cell's text: a ``|`` or a line break would break the table."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[int] = ()) -> str:
    """A GitHub table; ``right`` are the indexes of right-aligned (figure) columns."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _table(t: Table) -> list[str]:
    shown = [i for i, c in enumerate(t.columns) if c.importance != COMPACT]
    rows = [[f"_{row[i].text}_" if row[i].style == "muted" and row[i].text != "–"
             else row[i].text for i in shown] for row in t.rows]
    right = [n for n, i in enumerate(shown) if t.columns[i].right]
    out = [f"**{t.title}**", ""] if t.title else []
    out += [table([t.columns[i].name for i in shown], rows, right), ""]
    return out + ([t.caption, ""] if t.caption else [])


def _paragraph(p: Paragraph) -> str:
    text = f"**{p.text}**" if p.style == "strong" and not p.lead else p.text
    if p.lead:
        text = f"**{p.lead}** {text}"
    # A line break inside a list item continues the item (an error message may hold one).
    return "- " + text.replace("\n", "\n  ") if p.indent else text


class Markdown(Format):
    """GitHub-flavoured Markdown."""

    name = "markdown"

    def render(self, doc: Document, verbose: bool = False) -> str:
        out = [f"## {doc.headline}", ""]
        if doc.verdict:
            out += [f"**{doc.verdict_line}**", ""]
        if doc.findings:
            out += [doc.findings, ""]
        out += self.blocks(doc.body)
        out += self.blocks(doc.appendix)
        if doc.footer:
            out += ["---", "", f"<sub>{doc.footer}</sub>", ""]
        return "\n".join(out)

    def blocks(self, items: Sequence[Block]) -> list[str]:
        """The blocks as Markdown lines, each followed by a blank line (a list by one)."""
        out: list[str] = []
        for block in items:
            if block.detail not in _ALL:
                continue
            listed = isinstance(block, Paragraph) and block.indent > 0
            if out and out[-1].startswith("- ") and not listed:
                out.append("")  # a list ends
            if listed:
                out.append(_paragraph(block))
                continue
            if isinstance(block, Paragraph):
                out += [_paragraph(block), ""]
            elif isinstance(block, Heading):
                out += ["#" * (block.level + 1) + " " + block.text, ""]
            elif isinstance(block, Table):
                out += _table(block)
            elif isinstance(block, Pairs):
                out += [table(["", ""], [[f"**{k}**", v] for k, v in block.rows]), ""]
            elif isinstance(block, Facts):
                out += [table(["fact (inside the workers)", *block.builds],
                              [[fact, *values] for fact, values in block.rows]), ""]
            elif isinstance(block, Verbatim):
                code = [f"```{block.language}", block.text, "```", ""]
                if block.title:
                    note = f": {block.note}" if block.note else ""
                    code = [f"<details><summary><code>{block.title}</code>{note}</summary>",
                            "", *code, "</details>", ""]
                out += code
            elif isinstance(block, Charts):
                out += [block.hint, ""]
            elif isinstance(block, Part):
                inner = self.blocks(block.blocks)
                if block.collapsed:
                    out += [f"<details><summary>{block.title}</summary>", "", *inner,
                            "</details>", ""]
                else:
                    out += [f"### {block.title}", "", *inner]
        if out and out[-1].startswith("- "):
            out.append("")
        return out
