"""One build's details: why it got its verdict and the fix, then its routes (or what its kind
of worker adds: ``kinds.interface.KindReport.details``), as document blocks.

The one place a build's or a route's explanation is written: the terminal shows the
lines that fired, Markdown and HTML every rule (``not fired`` ones at ``REFERENCE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from geventprobe.record import BuildResult, RouteResult, RouteWait, Verdict
from geventprobe.report.cells import (
    VERDICT_STYLE,
    as_expected,
    blocked_line,
    connect_line,
    evidence_text,
    label,
    num,
)
from geventprobe.report.document import (
    REFERENCE,
    SUMMARY,
    VERBOSE,
    Block,
    Cell,
    Column,
    Heading,
    Paragraph,
    Table,
)

if TYPE_CHECKING:
    from geventprobe.kinds.interface import KindReport


def explanation(b: BuildResult, detail: str = SUMMARY, kills: bool = True) -> list[Block]:
    """A build's rules (the ones that fired; the others for reference), the error, cause and
    fix, how to install it, who blocked, and (``kills``) the workers gunicorn killed."""
    lines: list[Block] = []
    for e in b.evidence:
        lines.append(Paragraph(evidence_text(e), lead="evidence:", indent=1, detail=detail)
                     if e.fired else
                     Paragraph(evidence_text(e), lead="not fired:", indent=1, detail=REFERENCE))
    error = b.error if b.verdict is Verdict.ERROR else None
    if error:
        lines.append(Paragraph(error, lead="error:", indent=1, detail=detail))
    if b.cause and b.cause != error:  # a failed probe's cause is its error
        lines.append(Paragraph(b.cause, lead="cause:", indent=1, detail=detail))
    install = b.install if b.verdict is Verdict.UNAVAILABLE else None
    if b.advice and b.advice != install:  # a missing build's fix is its install command
        lines.append(Paragraph(b.advice, lead="fix:", indent=1, detail=detail))
    if install:
        lines.append(Paragraph(f"`{install}`", lead="install:", indent=1, detail=detail))
    lines += [Paragraph(blocked_line(s), lead="who blocked:", indent=1, detail=detail)
              for s in b.blocked_by]
    if b.worker_timeouts and kills:
        lines.append(Paragraph(f"gunicorn killed {b.worker_timeouts} worker(s) for a blocked "
                               "hub (WORKER TIMEOUT)", indent=1, detail=detail))
    return lines


def wanted(b: BuildResult) -> bool:
    """A build gets a heading and its explanation when it is not OK, or has routes, tasks or
    stacks."""
    return b.verdict is not Verdict.OK or bool(b.routes or b.blocked_by or b.tasks)


def details(b: BuildResult, kind: KindReport | None = None) -> list[Block]:
    """Everything the report says about one build below the verdict table (and what its
    kind of worker adds: ``KindReport.details``, a celery worker's tasks).

    A baseline that got its known class is its heading alone in the terminal (its
    evidence, cause and fix with ``-v``): the user has nothing to do about it. A baseline
    that missed keeps them all, as does every build under test.
    """
    m = b.metrics
    connect = m.connect if m is not None else None
    if not wanted(b):
        if connect is None:
            return []
        return [Paragraph(connect_line(connect), lead=f"{label(b)} connect:", detail=VERBOSE)]
    head = f"{label(b)}: {b.verdict.value}"
    quiet = as_expected(b)
    if quiet:
        # Workers killed by gunicorn show in its log: say why here, still on the one line.
        head += (f" (baseline, as expected; gunicorn killed {b.worker_timeouts} worker(s): "
                 "WORKER TIMEOUT)" if b.worker_timeouts else " (baseline, as expected)")
    elif b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR):
        head += f" (baseline, expected {b.expected})"
    out: list[Block] = [Heading(head, VERDICT_STYLE[b.verdict])]
    out += explanation(b, VERBOSE if quiet else SUMMARY, kills=not quiet)
    if connect is not None:
        fired = any(e.fired and e.phase == "connect" for e in b.evidence)
        out.append(Paragraph(connect_line(connect), lead="connect:", indent=1,
                             detail=SUMMARY if fired and not quiet else VERBOSE))
    if b.routes:
        out.append(route_table(b.routes))
        out += route_details(b.routes)
    if kind is not None:
        out += kind.details(b)
    return out


# ---------------------------------------------------------------- routes (run --app --route)


def route_table(routes: Sequence[RouteResult]) -> Table:
    """A lone request, then a burst, per route."""
    columns = [Column("route"), Column("verdict"), Column("lone ms", True, 2),
               Column("burst p50 ms", True, 3), Column("p99 ms", True, 3),
               Column("×factor", True, 1), Column("server conns", True, 4),
               Column("statuses", importance=2, wrap=True)]
    rows = []
    for r in routes:
        p50, p99 = r.burst.p50_us, r.burst.p99_us
        statuses = ", ".join(f"{k}×{v}" for k, v in r.statuses.items()) or "–"
        rows.append([Cell(r.shown, "strong"),
                     Cell(r.verdict.value, VERDICT_STYLE[r.verdict]),
                     Cell(num(r.lone_ms, "{:,.1f}")),
                     Cell(num(p50 and p50 / 1000, "{:,.1f}")),
                     Cell(num(p99 and p99 / 1000, "{:,.1f}")),
                     Cell(num(r.burst_factor, "×{:.1f}")),
                     Cell(num(r.server_connections, "{:d}")),
                     Cell(statuses)])
    conc = routes[0].concurrency if routes else 0
    return Table(columns, rows, title="your app's routes: one request alone, then a burst",
                 caption=f"×factor = burst p90 / the lone request ({conc} at once per worker: "
                         f"about 1 when they overlap, about {conc} when they run one at a "
                         "time); server conns = most connections one worker held")


def waited_line(w: RouteWait) -> str:
    """``9 at once at app.py:34 in application (pool; in sqlalchemy/util/queue.py:199 in get;
    1 working meanwhile)``."""
    at = _frame(w.where) if w.where else _frame(w.wait)
    inner = f"; in {_frame(w.wait)}" if w.where and w.wait != w.where else ""
    return f"{w.most} at once at {at} ({w.kind}{inner}; {w.working} working meanwhile)"


def _frame(text: str) -> str:
    """``app.py:34 in application`` from ``app.py:34 in application: with …``."""
    head, sep, _ = text.partition(": ")
    return head if sep and " in " in head else text


def _notes(r: RouteResult) -> list[str]:
    """A route's notes: what its burst's time was when the CPU explains it, what the
    warm-up stalled, a redirect or refusal it answered."""
    return [n for n in (r.cpu.note if r.cpu else None,
                        r.warm_up.note if r.warm_up else None, r.note) if n]


def route_details(routes: Sequence[RouteResult]) -> list[Block]:
    """Each route that is not OK, or has a note: its evidence, cause, fix, the exception and
    the line that raised it, where the requests waited, who blocked, and the notes."""
    out: list[Block] = []
    for r in routes:
        notes = _notes(r)
        if r.verdict is Verdict.OK and not notes:
            continue
        out.append(Heading(f"{r.shown}: {r.verdict.value}",
                           VERDICT_STYLE[r.verdict], level=4))
        out += [Paragraph(e.text, lead="evidence:", indent=1) for e in r.evidence if e.fired]
        if r.cause:
            out.append(Paragraph(r.cause, lead="cause:", indent=1))
        if r.advice:
            out.append(Paragraph(r.advice, lead="fix:", indent=1))
        if r.first_error and r.first_error not in (r.cause or ""):
            out.append(Paragraph(r.first_error, lead="first error:", indent=1))
        if r.error_at:
            out.append(Paragraph(r.error_at, lead="raised at:", indent=1))
        # The busiest site is in the cause already: the others, and all with -v.
        out += [Paragraph(waited_line(w), lead="waited:", indent=1,
                          detail=SUMMARY if i else VERBOSE)
                for i, w in enumerate(r.waited_at)]
        out += [Paragraph(blocked_line(s), lead="who blocked:", indent=1) for s in r.blocked_by]
        out += [Paragraph(n, lead="note:", indent=1) for n in notes]
    return out
