"""The built-in driver builds: each a gunicorn running the harness app, one row per build.

``HarnessBuild`` is the subject: one build (``core/builds.py``) in gunicorn with the
harness app and config (``processes/gunicorn_workers.boot``), driven by
``app/wsgi_run.run_workers``, in geventprobe's own environment or a version matrix's
isolated one, optionally with a calibration control's set-up. ``DriverBuilds`` is the
target of a plain ``geventprobe run``: every requested build, in order, with the psycopg2
baselines that tell whether the detector sees on this machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from geventprobe.app.wsgi_run import WorkersRun, run_workers
from geventprobe.core import judge, metrics, rules
from geventprobe.core.builds import Availability, Build, install_command
from geventprobe.core.progress import Listener
from geventprobe.core.session import Session, require
from geventprobe.core.target import Probed
from geventprobe.processes import gunicorn_workers
from geventprobe.processes.run_dir import read_records
from geventprobe.record import BuildResult, Calibration, Verdict
from geventprobe.settings import Thresholds, Workload

BASELINE_FOR_RATIOS = "psycopg2-green"


@dataclass(frozen=True)
class HarnessBuild:
    """A built-in build under gunicorn with the harness app (a ``Subject``)."""

    build: Build
    preload: bool
    """gunicorn ``--preload``: the harness app (and its driver) imported in the master."""
    extra_env: dict = field(default_factory=dict)
    """A calibration control's set-up (``PSYCOPG_WAIT_FUNC``, ``GEVENTPROBE_CONTROL``)."""
    python: str | None = None
    """A version matrix's isolated interpreter (None: geventprobe's own)."""
    base_env: dict | None = None
    """The environment that interpreter's gunicorn starts from (the worker shim on
    ``PYTHONPATH``, nothing of ours); None: ours."""
    booted: gunicorn_workers.Boot | None = None
    """Its gunicorn, started ahead of its turn (``boot_ahead``); None: started at launch."""

    def _env(self) -> dict:
        return dict(self.build.env, GEVENTPROBE_BUILD=self.build.name, **self.extra_env)

    def launch(self, session: Session, workload: Workload) -> WorkersRun:
        """gunicorn with the harness app for this build; the workers' records."""
        started = time.monotonic()
        server = self.booted or gunicorn_workers.boot(
            self._env(), workload, session.dsn, self.preload, python=self.python,
            base_env=self.base_env, thresholds=session.plan.thresholds)
        return run_workers(server, workload, session.dsn, started=started)

    def boot(self, session: Session, workload: Workload, go_wait_s: float) -> HarnessBuild:
        """Itself with its gunicorn started now, to be measured in ``go_wait_s`` at most."""
        booted = gunicorn_workers.boot(self._env(), workload, session.dsn, self.preload,
                                       python=self.python, base_env=self.base_env,
                                       thresholds=session.plan.thresholds, go_wait_s=go_wait_s)
        session.at_close(booted.discard)
        return dataclasses.replace(self, booted=booted)

    def judge(self, run: WorkersRun, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The workers' figures through the verdict rules (the harness app has no routes)."""
        return judge.judge(self, run, workload, thresholds, started)

    def availability(self, session: Session) -> Availability:
        """Whether its build's driver imports (``booted_availability``)."""
        return booted_availability(self.build.name, self.booted, session)

    def discard(self) -> None:
        """Stop its gunicorn, started ahead, unmeasured (its build turned out not to import)."""
        if self.booted is not None:
            self.booted.discard()


def booted_availability(name: str, booted, session: Session) -> Availability:
    """Whether build ``name``'s driver imports, as the first worker of its server, started
    ahead (``booted``: a gunicorn or a uWSGI), found when it loaded the harness app: its ready
    record, or the result of a probe that could not start. A server that gives no answer
    (or none started ahead) is left to its turn, which says why."""
    if booted is not None:
        # None when a worker gave up before getting ready: its result says why.
        ready = booted.wait_for("ready", 1, session.plan.workload.boot_timeout_s)
        records = list((ready or read_records(booted.run_dir, "result")).values())
        error = (records[0].facts or {}).get("import_error") if records else None
        if error:
            reason = error.strip().splitlines()[0]  # as psycopg words it first
            return Availability(name, False, None, reason, install_command(name))
    return Availability(name, True, None, None, None)


def boot_ahead(session: Session, subjects: Sequence, workload: Workload) -> list:
    """Start every subject's server now (a ``HarnessBuild``'s gunicorn, a ``UwsgiBuild``'s
    uWSGI: each has ``boot``), so that they boot together before any of them is measured,
    and each is ready when its turn comes; the subjects, each with its server.

    Booting is the costliest thing a build does that measures nothing (measured: 0.5-0.7 s
    and 0.7 s of CPU for 4 workers, a build after the other); done at once for all, it keeps
    both cores busy for less time, and no build's boot or stop overlaps another's
    measurements. A booted worker waits for its go without its heartbeat, looking every
    10 ms (``worker/probe.py``).
    """
    # How long a build's turn may take at most: a later one's workers wait that much longer.
    turn = workload.probe_timeout_s() + workload.http_seconds + workload.http_timeout_s
    return [s.boot(session, workload, go_wait_s=i * turn) for i, s in enumerate(subjects)]


def unavailable(build: Build, avail: Availability) -> BuildResult:
    """The row of a build that does not import here: reason and install command."""
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=Verdict.UNAVAILABLE, cause=avail.reason,
        advice=avail.install, evidence=[], facts={}, metrics=None, workers=[],
        install=avail.install)


def with_ratios(results: list[BuildResult]) -> list[BuildResult]:
    """Add each psycopg 3 build's figures relative to psycopg2-green from the same run."""
    base = next((r for r in results if r.build == BASELINE_FOR_RATIOS and r.metrics), None)
    if base is None or base.verdict is not Verdict.OK:
        return results
    out = []
    for r in results:
        # A blocked hub's SELECT 1 looks fast (docs/field-facts.md): only OK builds compare.
        if not r.baseline and r.metrics is not None and r.verdict is Verdict.OK:
            m = dataclasses.replace(r.metrics, vs_baseline=metrics.versus(
                r.metrics, base.metrics, BASELINE_FOR_RATIOS))
            r = dataclasses.replace(r, metrics=m)
        out.append(r)
    return out


@dataclass(frozen=True)
class DriverBuilds:
    """``geventprobe run`` (a ``Target``): the built-in builds, one row each, in order."""

    builds: Sequence[Build]
    named: bool = False
    """True when the user listed the builds: then one that does not import is an error
    (otherwise its row says UNAVAILABLE, with the install command)."""

    def steps(self) -> int:
        """One step per build."""
        return len(self.builds)

    def prepare(self, listener: Listener) -> DriverBuilds:
        """Itself: the builds' imports are checked while the server starts."""
        return self

    def imports(self) -> Sequence[Build]:
        """None to check apart: every build's workers boot at once and say whether its
        driver imports (``availability``)."""
        return []

    def availability(self, session: Session, subjects: Sequence[HarnessBuild]
                     ) -> dict[str, Availability]:
        """Whether each build imports here, as its booted workers found."""
        mark = time.monotonic()
        found = {s.build.name: s.availability(session) for s in subjects}
        session.timings["boots"] = time.monotonic() - mark
        return found

    def probe(self, session: Session, listener: Listener) -> Probed:
        """Each build that imports, under gunicorn; the others as UNAVAILABLE rows."""
        # Every build boots at once; one whose workers say its driver does not import is
        # stopped unmeasured.
        subjects = self.subjects(session)
        available = self.availability(session, subjects)
        for subject in subjects:
            if not available[subject.build.name].ok:
                subject.discard()
        if self.named:
            require(available, self.builds)
        runnable = [b for b in self.builds if available[b.name].ok]
        rows = []
        for build, subject in zip(self.builds, subjects):
            if not available[build.name].ok:
                result = unavailable(build, available[build.name])
            else:
                listener.build_started(build.name, runnable.index(build), len(runnable))
                result = session.probe(subject, label=build.name)
            rows.append(result)
            listener.build_finished(result)
        notes = []
        if any(b.name == "psycopg2" for b in self.builds) and not available["psycopg2"].ok:
            notes.append("no live positive control: the psycopg2 baseline is unavailable, so "
                         "this run cannot show that the detector sees a blocked hub")
        return Probed(with_ratios(rows), notes)

    def subjects(self, session: Session) -> list[HarnessBuild]:
        """Every build under gunicorn with the harness app, each gunicorn started now."""
        return boot_ahead(session, [HarnessBuild(b, session.plan.preload) for b in self.builds],
                          session.plan.workload)

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The drivers' summary (``rules.summary``)."""
        return rules.summary(rows, code)

    def app_record(self) -> dict | None:
        """None: the built-in harness, not a deployment of the user's."""
        return None
