"""One row's verdict, from its workers' records and the parent's samples.

``judge`` reads a ``WorkersRun`` (whatever kind of worker produced it) and decides, in
this order: a worker that did not run, or one the master killed for a blocked hub, or a
probe that failed, says so before any figure is read; otherwise the figures
(``metrics``) go through the verdict rules (``rules``), the cause and fix are computed
from the workers' facts (``causes``), who blocked is counted (``blocked``), and the
subject's own phases (an app's routes) come judged. The judge of every gunicorn subject
(``HarnessBuild``, ``GunicornApp``: their ``judge`` calls this); a celery worker has its
own (``kinds/celery/task_rules.py``). No printing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from geventprobe.app.wsgi_run import WorkersRun
from geventprobe.core import blocked, causes, metrics, rules
from geventprobe.core.known_errors import Deployment
from geventprobe.core.target import Subject
from geventprobe.dsn import redact
from geventprobe.record import BuildResult, Evidence, RouteResult, Verdict
from geventprobe.settings import Thresholds, Workload


def _row(subject: Subject, **fields) -> BuildResult:
    b = subject.build
    return BuildResult(build=b.name, description=b.description, baseline=b.baseline,
                       expected=b.expected, **fields)


def _error(subject: Subject, error: str, facts: dict, run: WorkersRun, started: float
           ) -> BuildResult:
    return _row(subject, verdict=Verdict.ERROR, cause=error,
                advice=causes.explain_error(error), evidence=[], facts=facts, metrics=None,
                workers=[], error=error, worker_timeouts=run.worker_timeouts,
                duration_s=time.monotonic() - started)


def _worker_timeout(subject: Subject, run: WorkersRun, facts: dict, started: float,
                    words: Deployment) -> BuildResult:
    """The server killed a worker for its worker timeout (gunicorn's WORKER TIMEOUT): its hub
    did not run for longer than the timeout. That is the server's own evidence of a blocked
    hub, not a failure of the probe (``words``: the server's, gunicorn's by default)."""
    pids = ", ".join(str(p) for p in run.timed_out_pids)
    rule = Evidence(
        rule="worker-timeout", value=float(len(run.timed_out_pids)), threshold=1.0, fired=True,
        text=(f"{words.kills.format(pids=pids)}: its hub did not run for longer "
              f"than {words.timeout_flag} {run.timeout_s:g} s"))
    cause, advice = causes.worker_timeout(facts, subject.preload)
    return _row(subject, verdict=Verdict.BLOCKING, cause=cause, advice=advice, evidence=[rule],
                facts=facts, metrics=None, workers=[], worker_timeouts=run.worker_timeouts,
                duration_s=time.monotonic() - started)


def judge(subject: Subject, run: WorkersRun, workload: Workload, thresholds: Thresholds,
          started: float, routes: Callable[[WorkersRun], list[RouteResult]] | None = None,
          words: Deployment | None = None) -> BuildResult:
    """The row of ``subject``: its verdict, why, the fix, and every figure it rests on.

    ``routes``: judges the subject's own route phase (an app's ``--route``), once the
    workers' own figures are in. ``words``: the server's words for its evidence (gunicorn's
    when None)."""
    reports = run.results
    facts = reports[0].facts if reports else {}
    if run.not_running:  # before any verdict: a stopped worker's lag is not the driver's
        pid, seen = min(run.not_running.items())
        return _error(subject, f"worker {pid} did not run during the probe: it was {seen}, so "
                      "its figures say nothing about the driver", facts, run, started)
    if run.timed_out_pids:
        return _worker_timeout(subject, run, facts or run.ready_facts, started,
                               words or Deployment())
    failed = [r for r in reports if r.error]
    if failed:
        return _error(subject, redact(failed[0].error), facts, run, started)
    if run.error or not reports:
        return _error(subject, run.error or "no worker reported", facts, run, started)
    figures = [metrics.worker_figures(r, run.cpu, rtt_ms=workload.rtt_ms) for r in reports]
    m = metrics.build_metrics(
        reports, figures, run.cpu, workload.greenlets, rtt_ms=workload.rtt_ms,
        min_connect_window_ms=thresholds.connect_min_window_ms)
    # User-visible impact, beside the evidence: the rules below do not read it.
    m = dataclasses.replace(m, requests=run.requests)
    evidence = rules.evidence(m, thresholds)
    v = rules.classify(evidence)
    # The wait function can be looked up on every query: judge by what it was at the end.
    facts = reports[0].facts_after or facts
    phases = {e.phase for e in evidence if e.fired}
    cause, advice = causes.explain(v, facts, subject.preload, phases)
    if v is Verdict.BUSY_WAIT and "idle" in phases:
        # The worker also spun with its connections idle: who ran meanwhile may be a
        # greenlet of the app's, not the driver's wait function (issue 25 row 12).
        idle = [(f.cpu_while_idle, r.idle_running) for f, r in zip(figures, reports)
                if f.cpu_while_idle is not None]
        if idle:
            cpu, ran = max(idle, key=lambda pair: pair[0])  # the busiest worker's
            found = causes.busy_greenlet(ran, "its connections sat idle", cpu)
            if found is not None:
                cause, advice = found
    # Who blocked while connecting and in the wait windows (gevent's monitor thread, in
    # every worker).
    stacks = (blocked.stacks([e for r in reports for e in r.blocked_connect], "connect")
              + blocked.stacks([e for r in reports for e in r.blocked], "waits"))
    return _row(subject, verdict=v, cause=cause, advice=advice, evidence=evidence, facts=facts,
                metrics=m, workers=figures, worker_timeouts=run.worker_timeouts,
                duration_s=time.monotonic() - started, timings=phase_timings(run),
                blocked_by=stacks, routes=routes(run) if routes is not None else [])


def phase_timings(run: WorkersRun) -> dict[str, float]:
    """Where a row's time went, s: the parent's steps, and inside ``probe`` the workers'
    phases from the first worker to start one to the last to end it (one clock for all)."""
    out = dict(run.timings)
    spans = {
        "connect": [(r.connect.single[0], r.connect.windows[-1][1])
                    for r in run.results if r.connect and r.connect.windows],
        "idle": [tuple(r.idle_window) for r in run.results if r.idle_window],
        "waits": [(r.windows[0][0], r.windows[-1][1]) for r in run.results if r.windows],
        "select1": [tuple(r.select1_window) for r in run.results if r.select1_window],
    }
    for name, pairs in spans.items():
        if pairs:
            out[name] = max(b for _, b in pairs) - min(a for a, _ in pairs)
    return {k: round(v, 3) for k, v in out.items()}
