"""``geventprobe compare`` as a document every format renders, and as JSON."""

from __future__ import annotations

import dataclasses

from geventprobe.compare import BuildChange, Comparison, FigureChange
from geventprobe.report import json_format
from geventprobe.report.cells import VERDICT_STYLE
from geventprobe.report.document import (
    COMPACT,
    Block,
    Cell,
    Column,
    Document,
    Paragraph,
    Table,
)

HEADLINE = "geventprobe compare: verdict and evidence, before → after"

_CHANGE_STYLE = {"fixed": "ok", "regressed": "bad", "changed": "warn", "unchanged": None,
                 "added": "dim", "removed": "dim"}
_DIGITS = {"wait×": "{:.2f}", "hub lag ms": "{:,.1f}", "CPU/s waits": "{:.3f}",
           "CPU/query µs": "{:,.1f}", "request p99 ms": "{:,.1f}", "connect×": "{:.1f}",
           "connect hub lag ms": "{:,.1f}", "task hub lag ms": "{:,.1f}"}
"""Each figure's digits; a figure in seconds (``task queue max s``...) gets ``seconds``."""
_IMPORTANCE = {"wait×": 1, "hub lag ms": 2, "CPU/s waits": 3, "request p99 ms": 3,
               "connect×": 3, "SELECT 1 p99 µs": 4,
               # A celery worker's: its queue time and hub lag are its BLOCKING evidence.
               "task queue max s": 1, "task hub lag ms": 2, "task run max s": 3,
               "celery runtime max s": 4}
"""How long a figure stays as the width shrinks (the rest: only with room to spare)."""
_RATIO_SHOWN = ("wait×", "hub lag ms", "connect×")


def ratio_text(ratio: float | None) -> str:
    """``×2.4`` when a figure grew, ``÷8.0`` when it shrank."""
    if ratio is None:
        return ""
    if ratio >= 1:
        return f"×{ratio:,.0f}" if ratio >= 100 else f"×{ratio:.2f}"
    if ratio == 0:
        return "→ 0"
    return f"÷{1 / ratio:,.0f}" if ratio <= 0.01 else f"÷{1 / ratio:.2f}"


def seconds(v: float) -> str:
    """A time in seconds with the digits a change needs: ``0.066``, ``3.22``, ``41.3``
    (a celery task's queue time goes from hundredths of a second to seconds)."""
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 10 else f"{v:,.1f}"


def figure_text(f: FigureChange, with_ratio: bool = True) -> str:
    """``8.06 → 1.02 (÷7.90)``; ``0.056 → 3.19`` for seconds."""
    fmt = _DIGITS.get(f.figure)
    shown = seconds if fmt is None and f.figure.endswith(" s") else (fmt or "{:,.0f}").format

    def one(v):
        return "–" if v is None else shown(v)

    text = f"{one(f.before)} → {one(f.after)}"
    if with_ratio and f.ratio is not None:
        text += f" ({ratio_text(f.ratio)})"
    return text


def _better(f: FigureChange) -> bool | None:
    # Within ±10 % is noise on a shared machine (STYLE: honest statistics).
    if f.ratio is None or 0.9 <= f.ratio <= 1.1:
        return None
    return (f.ratio < 1) == f.lower_is_better


def verdicts(b: BuildChange) -> str:
    """``BLOCKING → OK``."""
    return f"{b.before or '–'} → {b.after or '–'}"


def figure_names(c: Comparison) -> list[str]:
    """Every figure some build has, in the order the core lists them."""
    names: list[str] = []
    for b in c.builds:
        names += [f.figure for f in b.figures if f.figure not in names]
    return names


def table(c: Comparison) -> Table:
    """Build, verdicts before → after, the change, then each figure before → after."""
    names = figure_names(c)
    columns = [Column("build"), Column("verdict"), Column("change"),
               Column("evidence", importance=COMPACT)]
    columns += [Column(n, True, _IMPORTANCE.get(n, 5)) for n in names]
    rows = []
    for b in c.builds:
        by_name = {f.figure: f for f in b.figures}
        wait = by_name.get("wait×")
        after = b.after or b.before
        row = [Cell(b.build + (" †" if b.baseline else ""), "strong"),
               Cell(verdicts(b), VERDICT_STYLE.get(after) if after else None),
               Cell(b.change, _CHANGE_STYLE[b.change]),
               Cell(f"wait× {figure_text(wait, False)}" if wait else "–")]
        for name in names:
            f = by_name.get(name)
            good = _better(f) if f else None
            style = None if good is None or b.change in ("added", "removed") else (
                "ok" if good else "bad")
            row.append(Cell(figure_text(f, name in _RATIO_SHOWN) if f else "–", style,
                            figure_text(f, False) if f else None))
        rows.append(row)
    return Table(columns, rows)


def document(c: Comparison) -> Document:
    """The comparison, once, for every format (``compare --format text|markdown``)."""
    refused = bool(c.refused and not c.forced)
    body: list[Block] = [Paragraph(c.before, lead="before:", style="dim"),
                         Paragraph(c.after, lead="after:", style="dim")]
    if not refused:
        body.append(table(c))
        body += [Paragraph("; ".join(f"{d.what} {d.before} → {d.after}" for d in b.facts),
                           lead=f"{b.build}:") for b in c.builds if b.facts]
    if c.differences:
        body.append(Paragraph("what differs between the runs:", style="strong"))
        body += [Paragraph(f"{d.what}: {d.before} → {d.after}"
                           + (" (makes the figures incomparable)" if d.confounding else ""),
                           indent=1, style="bad" if d.confounding else None)
                 for d in c.differences]
    # A refusal is said once in the terminal, by the error line; a file says it here.
    return Document(headline=HEADLINE, verdict=None if refused else c.summary,
                    findings=c.summary if refused else None, body=body,
                    failed=refused or bool(c.regressed))


def render_json(c: Comparison) -> str:
    """The comparison as JSON (verdicts as their names, ratios included)."""
    data = dataclasses.asdict(c)
    for b, built in zip(data["builds"], c.builds):
        for f, fig in zip(b["figures"], built.figures):
            f["ratio"] = fig.ratio
    return json_format.dumps(json_format.plain(data))
