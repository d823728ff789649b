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
from typing import Protocol

from geventprobe import __version__, builds, diagnosis, environment, metrics, verdict
from geventprobe.builds import Build
from geventprobe.config import Profile
from geventprobe.dsn import redact, uses_environment
from geventprobe.embedded_pg import EmbeddedPostgres
from geventprobe.errors import ProbeError
from geventprobe.gunicorn_harness import HarnessRun, run_build
from geventprobe.model import SCHEMA_VERSION, BuildResult, RunResult, Verdict
from geventprobe.server import ServerInfo, query_server

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
def _server(options: RunOptions, listener: Listener) -> Iterator[tuple[str, ServerInfo]]:
    """The DSN workers use and what the server said about itself."""
    needed = options.profile.workload.connections()
    if options.dsn is not None or uses_environment():
        dsn = options.dsn or ""
        listener.phase("connecting to PostgreSQL")
        info = query_server(dsn, embedded=False,
                            connect_timeout=options.profile.workload.connect_timeout_s)
        free = info.max_connections - info.connections_in_use
        if free < needed:
            raise ProbeError(
                f"the server has {free} free connections (max_connections "
                f"{info.max_connections}, {info.connections_in_use} in use) and the run needs "
                f"{needed} (workers × greenlets): lower --workers or --greenlets")
        yield dsn, info
        return
    listener.phase("starting the embedded PostgreSQL")
    # Room for a build's connections while the previous build's backends exit.
    with EmbeddedPostgres(max_connections=2 * needed + 10) as pg:
        info = query_server(pg.dsn, embedded=True)
        yield pg.dsn, info


def _unavailable(build: Build, avail: builds.Availability) -> BuildResult:
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


def probe_build(build: Build, options: RunOptions, dsn: str) -> BuildResult:
    """Run one build under gunicorn and judge it."""
    started = time.monotonic()
    workload = options.profile.workload
    env = dict(build.env, GEVENTPROBE_BUILD=build.name)
    run = run_build(env, workload, dsn, options.preload)
    reports = run.results
    facts = reports[0].get("facts", {}) if reports else {}
    failed = [r for r in reports if r.get("error")]
    if failed:
        return _error(build, redact(failed[0]["error"]), facts, run, started)
    if run.error or not reports:
        return _error(build, run.error or "no worker reported", facts, run, started)
    figures = [metrics.worker_figures(r, run.cpu) for r in reports]
    m = metrics.build_metrics(reports, figures, run.cpu, workload.greenlets)
    rules = verdict.evidence(m, options.profile.thresholds)
    v = verdict.classify(rules)
    # The wait function can be looked up on every query: judge by what it was at the end.
    facts = reports[0].get("facts_after") or facts
    cause, advice = diagnosis.explain(v, facts, options.preload)
    return BuildResult(
        build=build.name, description=build.description, baseline=build.baseline,
        expected=build.expected, verdict=v, cause=cause, advice=advice, evidence=rules,
        facts=facts, metrics=m, workers=figures, worker_timeouts=run.worker_timeouts,
        duration_s=time.monotonic() - started)


def _with_ratios(results: list[BuildResult]) -> list[BuildResult]:
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
    available = builds.check(options.builds)
    missing = [b for b in options.builds if not available[b.name].ok]
    if options.builds_named and missing:
        a = available[missing[0].name]
        raise ProbeError(f"build {a.build} is not available ({a.reason}): {a.install}")
    results: list[BuildResult] = []
    notes: list[str] = []
    with _server(options, listener) as (dsn, server):
        runnable = [b for b in options.builds if available[b.name].ok]
        for build in options.builds:
            if not available[build.name].ok:
                result = _unavailable(build, available[build.name])
            else:
                listener.build_started(build.name, runnable.index(build), len(runnable))
                result = probe_build(build, options, dsn)
            results.append(result)
            listener.build_finished(result)
    results = _with_ratios(results)
    names = {b.name for b in options.builds}
    if "psycopg2" in names and not available["psycopg2"].ok:
        notes.append("no live positive control: the psycopg2 baseline is unavailable, so this "
                     "run cannot show that the detector sees a blocked hub")
    code = verdict.exit_code(results)
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
        server=dataclasses.asdict(server),
        builds=results,
        summary=verdict.summary(results, code),
        exit_code=code,
        notes=notes,
    )
