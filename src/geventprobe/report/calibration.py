"""Calibration as document blocks: each control, expected → got, with the figures it was
judged on, and the outcome in one sentence (``run --calibrate`` and ``calibrate``)."""

from __future__ import annotations

from geventprobe.record import Calibration, ControlOutcome, Verdict
from geventprobe.report.cells import duration, num
from geventprobe.report.document import COMPACT, Cell, Column, Table

TITLE = "calibration: controls whose class is known"
NOT_RUN = ("Calibration not run (`geventprobe run --calibrate` first runs controls whose class "
           "is known, to show the detector is live on this machine).")


def _compact(o: ControlOutcome) -> str:
    """The deciding figures in a few words (a narrow layout's ``evidence`` column)."""
    fired = {(e.rule, e.phase) for e in o.evidence if e.fired}
    if o.expected == Verdict.BUSY_WAIT.value:
        return f"CPU {num(o.cpu_during_waits, '{:.2f}')}/s"
    connect_only = fired and all(phase == "connect" for _, phase in fired)
    if connect_only and o.connect_stall_share is not None:
        # Only connection setup blocked (preload-python-connect): the waits' figures say OK.
        return f"connect stall {o.connect_stall_share:.0%}"
    return f"wait× {num(o.wait_factor, '{:.2f}')}, hub {duration(o.max_hub_lag_ms)}"


def table(cal: Calibration, title: str | None = TITLE) -> Table:
    """Control → expected → got, with the figures each was judged on."""
    columns = [Column("control"), Column("build", importance=3), Column("expected"),
               Column("got"), Column("evidence", importance=COMPACT),
               Column("wait×", True, 2), Column("hub lag ms", True, 2),
               Column("CPU/s waits", True, 2), Column("runnable", True, 4),
               Column("other load", True, 3), Column("margin", True, 1)]
    rows = []
    for o in cal.outcomes:
        mark = {True: " ✓", False: " ✗"}.get(o.passed, "")
        style = "ok" if o.passed else "bad" if o.passed is False else "dim"
        rows.append([Cell(o.control, "strong"), Cell(o.build), Cell(o.expected),
                     Cell(o.got + mark, style), Cell(_compact(o)),
                     Cell(num(o.wait_factor, "{:.2f}×")),
                     Cell(num(o.max_hub_lag_ms, "{:,.1f}")),
                     Cell(num(o.cpu_during_waits, "{:.3f}")),
                     Cell(num(o.runnable_during_waits, "{:.0%}")),
                     Cell(num(o.foreign_busy, "{:.0%}")), Cell(num(o.margin, "{:.1f}×"))])
    return Table(columns, rows, title=title,
                 caption="margin = deciding figure / its threshold for a fault, threshold / "
                         "closest figure for OK (>1 is on the right side)")


def word(cal: Calibration) -> str:
    """PASSED, FAILED or INCONCLUSIVE."""
    return "PASSED" if cal.passed else "INCONCLUSIVE" if cal.saturated else "FAILED"


def style(cal: Calibration) -> str:
    """The outcome's meaning: ``ok``, ``warn`` (too busy to judge) or ``bad``."""
    return "ok" if cal.passed else "warn" if cal.saturated else "bad"


def outcome(cal: Calibration | None) -> str:
    """One sentence: the calibration's outcome and how long it took, or that it did not run."""
    if cal is None:
        return NOT_RUN
    return f"calibration {word(cal)}: {cal.reason} ({cal.duration_s:.1f} s)"
