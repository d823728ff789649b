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

from geventprobe import __version__
from geventprobe.app import route_rules
from geventprobe.core import blocked, builds, calibrate, causes, environment, metrics, rules
from geventprobe.core.builds import BY_NAME, Build
from geventprobe.dsn import own_connect_timeout, redact, uses_environment
from geventprobe.errors import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, ProbeError
from geventprobe.processes import children, delay_proxy, gunicorn_workers, preflight
from geventprobe.processes.gunicorn_workers import HarnessRun, run_build
from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.processes.server import ServerInfo, query_server
from geventprobe.record import (
    SCHEMA_VERSION,
    BuildResult,
    Calibration,
    DelayProxyFigures,
    Evidence,
    RunResult,
    Verdict,
)
from geventprobe.settings import Profile

if TYPE_CHECKING:
    from geventprobe.app.gunicorn_app import AppPlan

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
    proxied: bool = False
    """``dsn`` already leads through the ``--rtt`` delay proxy (a matrix's shared session):
    do not start another in front of it."""

    def __post_init__(self):
        # The user's own connect_timeout (in the DSN, or PGCONNECT_TIMEOUT) bounds every
        # connection of the run, the parent's and the workers', and the messages quote it.
        own = own_connect_timeout(self.dsn)
        workload = self.profile.workload
        if own is not None and own != workload.connect_timeout_s:
            object.__setattr__(self, "profile", dataclasses.replace(
                self.profile, workload=dataclasses.replace(workload, connect_timeout_s=own)))


@dataclass
class Reach:
    """How the workers reached the server: ``proxy`` is filled once the ``--rtt`` delay
    proxy has stopped (None when they reached it directly)."""

    proxy: DelayProxyFigures | None = None


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
def server(options: RunOptions, listener: Listener, reach: Reach | None = None
           ) -> Iterator[tuple[str, ServerInfo]]:
    """The DSN workers use and what the server said about itself, after the pre-flight
    checks; the run's time limit is enforced from here on (``preflight``).

    With ``rtt_ms`` the DSN leads through the delay proxy; its figures go to ``reach``.
    """
    preflight.check_before_start(
        options.profile.workload, options.dsn,
        embedded=options.dsn is None and not uses_environment(),
        allow_many_connections=options.allow_many_connections,
        python=options.python, env=options.base_env)
    with children.guarded(preflight.time_limit(options.time_limit_s)), \
            _open_server(options, listener, reach or Reach()) as found:
        try:
            yield found
        finally:
            gunicorn_workers.finish_previous()  # the last build's gunicorn, still exiting


@contextlib.contextmanager
def _open_server(options: RunOptions, listener: Listener, reach: Reach
                 ) -> Iterator[tuple[str, ServerInfo]]:
    needed = options.profile.workload.connections()
    if options.dsn is not None or uses_environment():
        dsn = options.dsn or ""
        listener.phase("connecting to PostgreSQL")
        info = query_server(dsn, embedded=False,
                            connect_timeout=options.profile.workload.connect_timeout_s,
                            needed=needed)
        preflight.check_budget(info, needed)
        with _delayed(dsn, options, listener, reach) as worker_dsn:
            yield worker_dsn, info
        return
    listener.phase("starting the embedded PostgreSQL")
    # Room for a build's connections while the previous build's backends exit.
    with EmbeddedPostgres(max_connections=2 * needed + 10) as pg:
        info = query_server(pg.dsn, embedded=True)
        with _delayed(pg.dsn, options, listener, reach) as worker_dsn:
            yield worker_dsn, info


@contextlib.contextmanager
def _delayed(dsn: str, options: RunOptions, listener: Listener, reach: Reach) -> Iterator[str]:
    """``dsn``, or with ``rtt_ms`` the same DSN through a delay proxy started for the run.

    The server facts above were asked directly; the workers (and ``--app``'s
    ``DATABASE_URL``) get the proxy's address, with user, password and options unchanged.
    """
    rtt_ms = options.profile.workload.rtt_ms
    if rtt_ms <= 0 or options.proxied:
        yield dsn
        return
    upstream = delay_proxy.upstream_for(dsn)
    listener.phase(f"starting the delay proxy ({rtt_ms:g} ms round trip)")
    proxy = delay_proxy.DelayProxy(upstream, rtt_ms)
    try:
        with proxy:
            yield delay_proxy.proxied_dsn(dsn, proxy.port)
    finally:
        reach.proxy = proxy.figures


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
        advice=causes.explain_error(error), evidence=[], facts=facts, metrics=None,
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
        cause, advice = causes.explain(Verdict.BLOCKING, facts, preload)
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
                    base_env=options.base_env, thresholds=options.profile.thresholds,
                    **(harness or {}))
    reports = run.results
    facts = reports[0].get("facts", {}) if reports else {}
    if run.not_running:  # before any verdict: a stopped worker's lag is not the driver's
        pid, seen = min(run.not_running.items())
        return _error(build, f"worker {pid} did not run during the probe: it was {seen}, so "
                      "its figures say nothing about the driver", facts, run, started)
    if run.timed_out_pids:
        return _worker_timeout(build, run, facts or run.ready_facts, preload, started)
    failed = [r for r in reports if r.get("error")]
    if failed:
        return _error(build, redact(failed[0]["error"]), facts, run, started)
    if run.error or not reports:
        return _error(build, run.error or "no worker reported", facts, run, started)
    figures = [metrics.worker_figures(r, run.cpu, rtt_ms=workload.rtt_ms) for r in reports]
    m = metrics.build_metrics(
        reports, figures, run.cpu, workload.greenlets, rtt_ms=workload.rtt_ms,
        min_connect_window_ms=options.profile.thresholds.connect_min_window_ms)
    # User-visible impact, beside the evidence: the rules below do not read it.
    m = dataclasses.replace(m, requests=run.requests)
    evidence = rules.evidence(m, options.profile.thresholds)
    v = rules.classify(evidence)
    # The wait function can be looked up on every query: judge by what it was at the end.
    facts = reports[0].get("facts_after") or facts
    cause, advice = causes.explain(v, facts, preload, {e.phase for e in evidence if e.fired})
    # Who blocked while connecting and in the wait windows (gevent's monitor thread, in
    # every worker).
    stacks = (blocked.stacks([e for r in reports for e in r.get("blocked_connect") or []],
                             "connect")
              + blocked.stacks([e for r in reports for e in r.get("blocked") or []], "waits"))
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=v, cause=cause, advice=advice, evidence=evidence,
        facts=facts, metrics=m, workers=figures, worker_timeouts=run.worker_timeouts,
        duration_s=time.monotonic() - started, timings=phase_timings(run), blocked_by=stacks,
        routes=route_rules.judge_all(run.routes, options.profile.thresholds))


def phase_timings(run: HarnessRun) -> dict[str, float]:
    """Where a build's time went, s: the parent's steps, and inside ``probe`` the workers'
    phases from the first worker to start one to the last to end it (one clock for all)."""
    out = dict(run.timings)
    spans = {
        "connect": [(r["connect"]["single"][0], r["connect"]["windows"][-1][1])
                    for r in run.results if r.get("connect")],
        "waits": [(r["windows"][0][0], r["windows"][-1][1]) for r in run.results
                  if r.get("windows")],
        "select1": [tuple(r["select1_window"]) for r in run.results if r.get("select1_window")],
    }
    for name, pairs in spans.items():
        if pairs:
            out[name] = max(b for _, b in pairs) - min(a for a, _ in pairs)
    return {k: round(v, 3) for k, v in out.items()}


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
                  notes: list[str], calibration: Calibration | None,
                  proxy: DelayProxyFigures | None = None) -> RunResult:
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
        proxy=proxy,
    )


def calibration_only(options: RunOptions, listener: Listener | None = None) -> RunResult:
    """``geventprobe calibrate``: the controls alone; exit 0 pass, 1 fail, 3 saturated."""
    listener = listener or NullListener()
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    listener.phase("checking which builds import")
    available = builds.check(calibrate.all_builds())
    reach = Reach()
    with server(options, listener, reach) as (dsn, server_info):
        cal = run_controls(options, dsn, available, listener)
    code = (EXIT_INCONCLUSIVE if cal.saturated else EXIT_OK if cal.passed else EXIT_FINDINGS)
    return result_record(options, started_wall, started, server_info, [], code,
                   f"calibration: {cal.reason}; exit {code}", [], cal, proxy=reach.proxy)


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


def run(options: RunOptions, listener: Listener | None = None) -> RunResult:
    """Probe every requested build; return the whole result."""
    listener = listener or NullListener()
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    listener.phase("checking which builds import")
    timings: dict[str, float] = {}
    # The import checks run while the server starts (about a second each, measured).
    checking = builds.ImportCheck(
        calibrate.all_builds() if options.calibrate else options.builds,
        python=options.python, base_env=options.base_env)
    results: list[BuildResult] = []
    notes: list[str] = []
    calibration = None
    reach = Reach()
    try:
        with server(options, listener, reach) as (dsn, server_info):
            timings["server"] = time.monotonic() - started
            available = checking.result()
            timings["imports"] = time.monotonic() - started - timings["server"]
            missing = [b for b in options.builds if not available[b.name].ok]
            if options.builds_named and missing:
                a = available[missing[0].name]
                raise ProbeError(f"build {a.build} is not available ({a.reason}): {a.install}")
            if options.calibrate:
                mark = time.monotonic()
                calibration = run_controls(options, dsn, available, listener)
                timings["calibration"] = time.monotonic() - mark
            runnable = [b for b in options.builds if available[b.name].ok]
            for build in options.builds:
                if not available[build.name].ok:
                    result = unavailable(build, available[build.name])
                else:
                    listener.build_started(build.name, runnable.index(build), len(runnable))
                    result = probe_build(build, options, dsn)
                    timings[f"build {build.name}"] = result.duration_s
                results.append(result)
                listener.build_finished(result)
            if options.app is not None:
                listener.build_started(options.app.build.name, 0, 1)
                result = probe_build(options.app.build, options, dsn,
                                     extra_env=options.app.env(dsn), harness=options.app.harness)
                timings[f"build {result.build}"] = result.duration_s
                results.append(result)
                listener.build_finished(result)
    finally:
        checking.close()
    results = with_ratios(results)
    names = {b.name for b in options.builds}
    if "psycopg2" in names and not available["psycopg2"].ok:
        notes.append("no live positive control: the psycopg2 baseline is unavailable, so this "
                     "run cannot show that the detector sees a blocked hub")
    results, code, inconclusive = rules.settle(results, options.fail_on, calibration)
    notes += inconclusive
    summary = rules.summary(results, code)
    return dataclasses.replace(
        result_record(options, started_wall, started, server_info, results, code, summary,
                      notes, calibration, proxy=reach.proxy),
        timings={k: round(v, 3) for k, v in timings.items()})
