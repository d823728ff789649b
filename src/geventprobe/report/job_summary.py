"""GitHub Actions' job summary: the Markdown report appended to ``$GITHUB_STEP_SUMMARY``,
shortened to fit GitHub's limit of 1 MiB per step.

Not a format: it picks which document to write (the whole one, or a short one) and
writes it with the Markdown format.
"""

from __future__ import annotations

import dataclasses
import os

from geventprobe.report.document import Document, Paragraph, Table
from geventprobe.report.formats.markdown import Markdown

STEP_SUMMARY_LIMIT = 1024 * 1024
"""GitHub rejects a job summary over 1 MiB (per step): stay well under it."""
SHORTENED = ("_Shortened to fit GitHub's 1 MiB job summary: the full report is in "
             "`--markdown` / `--json`._")


def step_summary(doc: Document, budget: int = STEP_SUMMARY_LIMIT) -> str:
    """The report for ``$GITHUB_STEP_SUMMARY``, within ``budget`` bytes.

    The whole report when it fits; else the verdict, the findings and the verdict table
    (the JSON artifact still has everything); else the verdict and findings, cut.
    """
    full = Markdown().render(doc)
    if len(full.encode()) <= budget:
        return full
    table = [b for b in doc.body if isinstance(b, Table) and b.title is None][:1]
    short = Markdown().render(dataclasses.replace(
        doc, body=[*table, Paragraph(SHORTENED)], appendix=[], footer=None))
    if len(short.encode()) <= budget:
        return short
    lines = [f"## {doc.headline}", "", *[t for t in (doc.verdict_line, doc.findings) if t]]
    data = "\n".join(lines).encode()[:max(0, budget)]
    return data.decode(errors="ignore")


def append(doc: Document, path: str) -> None:
    """Append the report to GitHub's job summary file, keeping the step under 1 MiB."""
    try:
        used = os.path.getsize(path)
    except OSError:
        used = 0
    text = step_summary(doc, STEP_SUMMARY_LIMIT - used - 2)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text + "\n")
