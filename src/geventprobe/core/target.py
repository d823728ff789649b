"""What a run probes: the extension point for a new kind of worker.

A run (``core/runner.run``) probes one **target**, made of **subjects** (one subject, one
row of the report). Two protocols, so that the core has one way through every run:

- ``Target``: what one run probes, and how its headline reads. ``DriverBuilds``
  (``core/drivers.py``: the built-in driver builds), ``GunicornApp``
  (``app/gunicorn_app.py``: the user's app under their gunicorn config, with its routes),
  ``CeleryApp`` (``kinds/celery/app.py``: the user's celery worker under ``-P gevent``, with
  its tasks), ``VersionMatrix`` (``versions/matrix.py``), ``CalibrationOnly``
  (``core/calibrate.py``).
- ``Subject``: one thing whose workers are started, probed and judged into one row.
  ``HarnessBuild`` (a built-in build in gunicorn running the harness app), ``GunicornApp``
  and ``CeleryApp`` themselves.

A subject's ``launch`` starts its workers, runs the in-worker probe and collects their
typed records (``worker/record.py``); its ``judge`` turns them into the row. Every
gunicorn subject's ``launch`` returns a ``WorkersRun`` (``app/wsgi_run.py``) and its
``judge`` is ``core/judge.py``'s, with its own phases (an app's routes); a celery worker's
is a ``CeleryRun`` (``kinds/celery/workers.py``: tasks through a broker) judged by
``kinds/celery/task_rules.py``. Either way the row is a ``BuildResult`` and the run is settled
once (``rules.settle``), recorded and rendered the same way (docs/how-it-works.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from geventprobe.record import BuildResult, Calibration, MatrixEnv

if TYPE_CHECKING:
    from geventprobe.core.builds import Build
    from geventprobe.core.progress import Listener
    from geventprobe.core.session import Session
    from geventprobe.settings import Thresholds, Workload

Launched = object
"""What a subject's ``launch`` returns: its kind's records (a ``WorkersRun``, a
``CeleryRun``...), which only its own ``judge`` reads: the core passes them on unread."""


class Subject(Protocol):
    """One thing probed: its workers are started, probed and judged as one row."""

    build: Build
    """The row's identity: name, description, baseline and its expected class, and the
    environment its workers get."""
    preload: bool
    """True when its app is imported in the master before the workers patch (the causes
    read it)."""

    def launch(self, session: Session, workload: Workload) -> Launched:
        """Start the workers against ``session.dsn``, run the probe in them, collect their
        records and stop them (every process reaped, every temp dir removed)."""

    def judge(self, run: Launched, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The row: the verdict, why, the fix and every figure it rests on, from what
        ``launch`` returned (``started``: when the row began, for its duration)."""


@dataclass(frozen=True)
class Probed:
    """What a target's ``probe`` returns: every row measured and judged, not yet settled."""

    rows: list[BuildResult]
    notes: list[str] = field(default_factory=list)
    """What a reader must know about these rows (a baseline that could not run...)."""
    matrix: list[MatrixEnv] | None = None
    """A version matrix's environments (``RunResult.matrix``)."""


class Target(Protocol):
    """What one run probes: its rows, and the words of its headline."""

    def steps(self) -> int:
        """Rows the progress bar counts (before the calibration controls)."""

    def prepare(self, listener: Listener) -> Target:
        """The target ready to probe, after anything slow that must happen before the server
        starts and the run's time limit runs (a version matrix makes its environments);
        itself for most."""

    def imports(self) -> Sequence[Build]:
        """Builds whose import is checked in geventprobe's environment while the server
        starts (``Session.available``)."""

    def probe(self, session: Session, listener: Listener) -> Probed:
        """Probe and judge every row against the session's server."""

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The verdict sentence of the settled rows (``RunResult.verdict``), without the exit
        code: that is a slot of its own (``code`` may change the words, as --fail-on does)."""

    def app_record(self) -> dict | None:
        """``RunResult.app``: the user's deployment as probed; None for the built-in harness."""
