"""What a kind of worker gives the plan and the report: its target, and its sections.

A kind that plans its own runs returns a ``KindPlan`` from its planner (``kinds.plan``).

The report layer (``report/``) holds the words of the WSGI runs it was first written for
(the driver builds, a gunicorn app); any other kind of worker brings its own sections,
found through ``kinds.report_of`` by the kind's name recorded in the run
(``RunResult.app["kind"]``), so that ``geventprobe report saved.json`` renders a saved
run of any kind. ``kinds/celery/report.py`` is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from geventprobe.core.target import Target
    from geventprobe.record import BuildResult, RunResult
    from geventprobe.report.document import Block, Table
    from geventprobe.report.repro import Reproduction
    from geventprobe.settings import Workload


@dataclass(frozen=True)
class KindPlan:
    """What a kind's planner (``kinds.plan``) makes of a request that asks for it."""

    target: Target
    """The run's target, and its subject(s) (``core/target.py``)."""
    workload: Workload
    """The profile's workload as this kind shapes it (a celery worker is one process)."""


class KindReport(Protocol):
    """A kind's sections of the report document, in its own words."""

    headline: str
    """The report's headline (``geventprobe: your celery worker under -P gevent``)."""
    probed: str
    """What a run of this kind probed, in a few words (``a celery worker``)."""
    facts_intro: str
    """What the table of the workers' facts holds, in a sentence."""
    no_charts: str
    """Why a run of this kind has no charts (``report --format png`` exits 2 with it)."""
    facts_rows: Sequence[tuple[str, Callable[[BuildResult], object]]]
    """The rows it adds to the workers' facts: a label, and the value of a row's facts
    (None: not said)."""

    def deployment(self, result: RunResult) -> list[Block]:
        """The lines on how the workers were started, above the verdict table."""

    def table(self, result: RunResult) -> Table:
        """The verdict table."""

    def legend(self, result: RunResult) -> str | None:
        """What the verdict table's columns mean (``-v``)."""

    def findings(self, result: RunResult) -> str | None:
        """The findings paragraph."""

    def details(self, build: BuildResult) -> list[Block]:
        """What a row adds under its explanation (a celery worker's tasks)."""

    def reproduction(self, build: BuildResult, result: RunResult) -> Reproduction:
        """The harness's reproduction of a row (the Markdown report embeds it)."""
