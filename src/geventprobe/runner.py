"""The core of ``geventprobe run``: server, builds, gunicorn, verdicts. No printing here.

Progress goes to a listener (the CLI draws it); the result is a ``RunResult``.
Every process and temp dir is owned by a context manager, so it is stopped,
reaped and removed however the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from geventprobe import (
    __version__,
    blocked,
    builds,
    calibrate,
    diagnosis,
    environment,
    metrics,
    preflight,
    procs,
    route_verdict,
    verdict,
)
from geventprobe.builds import BY_NAME, Build
from geventprobe.config import Profile
from geventprobe.dsn import redact, uses_environment
from geventprobe.embedded_pg import EmbeddedPostgres
from geventprobe.errors import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, ProbeError
from geventprobe.gunicorn_harness import HarnessRun, run_build
from geventprobe.model import (
    SCHEMA_VERSION,
    BuildResult,
    Calibration,
    Evidence,
    RunResult,
    Verdict,
)
from geventprobe.server import ServerInfo, query_server

if TYPE_CHECKING:
    from geventprobe.app_mode import AppPlan

BASELINE_FOR_RATIOS = "psycopg2-green"


@dataclass(frozen=True)
class RunOptions:
    """Everything ``run`` needs, already validated."""

    profile: Profile
    builds: list[Build]
    builds_named: bool
    """True when the user listed the builds (then an unavailable one is an error)."""
    dsn: str | None
    preload: bool
    command: list[str]
    calibrate: bool = False
    """Run the calibration controls first and record them (``run --calibrate``)."""
    python: str | None = None
    """Interpreter for gunicorn and the import check (a version matrix's isolated
    environment); None: geventprobe's own."""
    base_env: dict[str, str] | None = None
    """Environment those processes start from instead of ours (matrix: the harness shim on
    ``PYTHONPATH`` and nothing that would leak our packages)."""
    allow_many_connections: bool = False
    """The user confirmed more than ``preflight.CONNECTION_CAP`` connections at once."""
    time_limit_s: float = 600.0
    """The run is stopped (exit 2) once it has lasted this long (``--time-limit``)."""
    fail_on: tuple[str, ...] = ("blocking", "busy-wait", "serialized", "failing")
    """Verdicts of a build under test that make the run exit 1 (``--fail-on``)."""
    app: AppPlan | None = None
    """``run --app``: the user's app under their gunicorn config, probed as one more build
    after ``builds`` (usually none); see ``app_mode.py``."""


class Listener(Protocol):
    """Receives progress; the core never prints."""

    def phase(self, text: str) -> None:
        """A step of the run started."""

    def build_started(self, build: str, index: int, total: int) -> None:
        """gunicorn for ``build`` is starting."""

    def build_finished(self, result: BuildResult) -> None:
        """``build`` has its verdict."""


class NullListener:
    """A listener that ignores everything."""

    def phase(self, text: str) -> None:
        pass

    def build_started(self, build: str, index: int, total: int) -> None:
        pass

    def build_finished(self, result: BuildResult) -> None:
        pass


@contextlib.contextmanager
def server(options: RunOptions, listener: Listener) -> Iterator[tuple[str, ServerInfo]]:
    """The DSN workers use and what the server said about itself, after the pre-flight
    checks; the run's time limit is enforced from here on (``preflight``)."""
    preflight.check_before_start(
        options.profile.workload, options.dsn,
        embedded=options.dsn is None and not uses_environment(),
        allow_many_connections=options.allow_many_connections,
        python=options.python, env=options.base_env)
    with procs.guarded(preflight.time_limit(options.time_limit_s)), \
            _open_server(options, listener) as found:
        yield found


@contextlib.contextmanager
def _open_server(options: RunOptions, listener: Listener) -> Iterator[tuple[str, ServerInfo]]:
    needed = options.profile.workload.connections()
    if options.dsn is not None or uses_environment():
        dsn = options.dsn or ""
        listener.phase("connecting to PostgreSQL")
        info = query_server(dsn, embedded=False,
                            connect_timeout=options.profile.workload.connect_timeout_s,
                            needed=needed)
        preflight.check_budget(info, needed)
        yield dsn, info
        return
    listener.phase("starting the embedded PostgreSQL")
    # Room for a build's connections while the previous build's backends exit.
    with EmbeddedPostgres(max_connections=2 * needed + 10) as pg:
        info = query_server(pg.dsn, embedded=True)
        yield pg.dsn, info


def unavailable(build: Build, avail: builds.Availability) -> BuildResult:
    """The row of a build that does not import here: reason and install command."""
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=Verdict.UNAVAILABLE, cause=avail.reason,
        advice=avail.install, evidence=[], facts={}, metrics=None, workers=[],
        install=avail.install)


def _error(build: Build, error: str, facts: dict, run: HarnessRun, started: float
           ) -> BuildResult:
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=Verdict.ERROR, cause=error,
        advice=diagnosis.explain_error(error), evidence=[], facts=facts, metrics=None,
        workers=[], error=error, worker_timeouts=run.worker_timeouts,
        duration_s=time.monotonic() - started)


def _worker_timeout(build: Build, run: HarnessRun, facts: dict, preload: bool, started: float
                    ) -> BuildResult:
    """gunicorn killed a worker for WORKER TIMEOUT: its hub did not run for longer than
    --timeout. That is gunicorn's own evidence of a blocked hub, not a failure of the probe."""
    pids = ", ".join(str(p) for p in run.timed_out_pids)
    rule = Evidence(
        rule="worker-timeout", value=float(len(run.timed_out_pids)), threshold=1.0, fired=True,
        text=(f"gunicorn killed worker {pids} (WORKER TIMEOUT): its hub did not run for longer "
              f"than --timeout {run.timeout_s} s"))
    if facts.get("driver"):
        cause, advice = diagnosis.explain(Verdict.BLOCKING, facts, preload)
    else:
        cause = "a worker's hub was blocked longer than gunicorn's --timeout"
        advice = "find the call that waits without yielding to gevent (see the evidence)"
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=Verdict.BLOCKING, cause=cause, advice=advice,
        evidence=[rule], facts=facts, metrics=None, workers=[],
        worker_timeouts=run.worker_timeouts, duration_s=time.monotonic() - started)


def probe_build(build: Build, options: RunOptions, dsn: str, *,
                extra_env: dict[str, str] | None = None, preload: bool | None = None,
                harness: dict | None = None) -> BuildResult:
    """Run one build under gunicorn and judge it.

    ``extra_env`` and ``preload`` let calibration controls change the setup of one run;
    ``harness`` (keywords of ``run_build``) runs the user's app instead (``run --app``).
    """
    started = time.monotonic()
    workload = options.profile.workload
    preload = options.preload if preload is None else preload
    env = dict(build.env, GEVENTPROBE_BUILD=build.name, **(extra_env or {}))
    run = run_build(env, workload, dsn, preload, python=options.python,
                    base_env=options.base_env, **(harness or {}))
    reports = run.results
    facts = reports[0].get("facts", {}) if reports else {}
    if run.timed_out_pids:
        return _worker_timeout(build, run, facts or run.ready_facts, preload, started)
    failed = [r for r in reports if r.get("error")]
    if failed:
        return _error(build, redact(failed[0]["error"]), facts, run, started)
    if run.error or not reports:
        return _error(build, run.error or "no worker reported", facts, run, started)
    figures = [metrics.worker_figures(r, run.cpu) for r in reports]
    m = metrics.build_metrics(reports, figures, run.cpu, workload.greenlets)
    # User-visible impact, beside the evidence: the rules below do not read it.
    m = dataclasses.replace(m, requests=run.requests)
    rules = verdict.evidence(m, options.profile.thresholds)
    v = verdict.classify(rules)
    # The wait function can be looked up on every query: judge by what it was at the end.
    facts = reports[0].get("facts_after") or facts
    cause, advice = diagnosis.explain(v, facts, preload)
    # Who blocked in the wait windows (gevent's monitor thread, in every worker).
    stacks = blocked.stacks([e for r in reports for e in r.get("blocked") or []], "waits")
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=v, cause=cause, advice=advice, evidence=rules,
        facts=facts, metrics=m, workers=figures, worker_timeouts=run.worker_timeouts,
        duration_s=time.monotonic() - started, blocked_by=stacks,
        routes=route_verdict.judge_all(run.routes, options.profile.thresholds))


def run_controls(options: RunOptions, dsn: str, available: dict[str, builds.Availability],
                 listener: Listener) -> Calibration:
    """Run every calibration control this machine can run, against ``dsn``."""
    started = time.monotonic()
    todo = calibrate.controls(available)
    # The controls test the in-worker rules; user-visible request latency adds nothing there.
    workload = dataclasses.replace(options.profile.workload, http_rate=0.0)
    options = dataclasses.replace(
        options, profile=dataclasses.replace(options.profile, workload=workload))
    outcomes = []
    for i, control in enumerate(todo):
        listener.build_started(f"control {control.name}", i, len(todo))
        result = probe_build(BY_NAME[control.build], options, dsn, extra_env=control.env,
                             preload=control.preload)
        result = dataclasses.replace(result, build=f"control {control.name}")
        listener.build_finished(result)
        outcomes.append(calibrate.outcome(control, result))
    return calibrate.judge(outcomes, options.profile.thresholds,
                           options.profile.workload.wait_seconds, started)


def result_record(options: RunOptions, started_wall: datetime, started: float,
                  server_info: ServerInfo, results: list[BuildResult], code: int, summary: str,
                  notes: list[str], calibration: Calibration | None) -> RunResult:
    """The whole run's record, from its parts (also for ``matrix``)."""
    return RunResult(
        schema_version=SCHEMA_VERSION,
        tool_version=__version__,
        started_at=started_wall.isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - started, 3),
        command=[redact(a) for a in options.command],
        preload=options.preload,
        profile={"source": options.profile.source,
                 "workload": dataclasses.asdict(options.profile.workload),
                 "thresholds": dataclasses.asdict(options.profile.thresholds)},
        environment=environment.collect(),
        server=dataclasses.asdict(server_info),
        builds=results,
        summary=summary,
        exit_code=code,
        notes=notes,
        calibration=calibration,
        app=options.app.record if options.app is not None else None,
    )


def calibration_only(options: RunOptions, listener: Listener | None = None) -> RunResult:
    """``geventprobe calibrate``: the controls alone; exit 0 pass, 1 fail, 3 saturated."""
    listener = listener or NullListener()
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    listener.phase("checking which builds import")
    available = builds.check(calibrate.all_builds())
    with server(options, listener) as (dsn, server_info):
        cal = run_controls(options, dsn, available, listener)
    code = (EXIT_INCONCLUSIVE if cal.saturated else EXIT_OK if cal.passed else EXIT_FINDINGS)
    return result_record(options, started_wall, started, server_info, [], code,
                   f"calibration: {cal.reason}; exit {code}", [], cal)


def with_ratios(results: list[BuildResult]) -> list[BuildResult]:
    """Add each psycopg 3 build's figures relative to psycopg2-green from the same run."""
    base = next((r for r in results if r.build == BASELINE_FOR_RATIOS and r.metrics), None)
    if base is None or base.verdict is not Verdict.OK:
        return results
    out = []
    for r in results:
        # A blocked hub's SELECT 1 looks fast (FIELD-NOTES §1): only OK builds compare.
        if not r.baseline and r.metrics is not None and r.verdict is Verdict.OK:
            m = dataclasses.replace(r.metrics, vs_baseline=metrics.versus(
                r.metrics, base.metrics, BASELINE_FOR_RATIOS))
            r = dataclasses.replace(r, metrics=m)
        out.append(r)
    return out


def run(options: RunOptions, listener: Listener | None = None) -> RunResult:
    """Probe every requested build; return the whole result."""
    listener = listener or NullListener()
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    listener.phase("checking which builds import")
    available = builds.check(calibrate.all_builds() if options.calibrate else options.builds,
                             python=options.python, base_env=options.base_env)
    missing = [b for b in options.builds if not available[b.name].ok]
    if options.builds_named and missing:
        a = available[missing[0].name]
        raise ProbeError(f"build {a.build} is not available ({a.reason}): {a.install}")
    results: list[BuildResult] = []
    notes: list[str] = []
    calibration = None
    with server(options, listener) as (dsn, server_info):
        if options.calibrate:
            calibration = run_controls(options, dsn, available, listener)
        runnable = [b for b in options.builds if available[b.name].ok]
        for build in options.builds:
            if not available[build.name].ok:
                result = unavailable(build, available[build.name])
            else:
                listener.build_started(build.name, runnable.index(build), len(runnable))
                result = probe_build(build, options, dsn)
            results.append(result)
            listener.build_finished(result)
        if options.app is not None:
            listener.build_started(options.app.build.name, 0, 1)
            result = probe_build(options.app.build, options, dsn,
                                 extra_env=options.app.env(dsn), harness=options.app.harness)
            results.append(result)
            listener.build_finished(result)
    results = with_ratios(results)
    names = {b.name for b in options.builds}
    if "psycopg2" in names and not available["psycopg2"].ok:
        notes.append("no live positive control: the psycopg2 baseline is unavailable, so this "
                     "run cannot show that the detector sees a blocked hub")
    results, code, inconclusive = verdict.settle(results, options.fail_on, calibration)
    notes += inconclusive
    summary = verdict.summary(results, code)
    return result_record(options, started_wall, started, server_info, results, code, summary, notes,
                   calibration)
