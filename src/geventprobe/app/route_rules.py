"""The verdict of each route of the user's app: figures in, class out, rules with numbers.

Pure functions of recorded figures (``routes.RouteRun`` and the workers' route-phase
reports), so they are tested exactly on recorded runs. The order is the severity:

- ``FAILING``: the lone request, or more than ``route_failing_share`` of the burst,
  answered 5xx, was reset or timed out; the first error line of the workers' log says why.
- ``BLOCKING``: a worker's heartbeat was ``route_hub_lag_ms`` late during the burst: the
  hub stalled (the driver verdict's meaning); the monitor thread's stacks say who blocked.
- ``SERIALIZED``: the hub stayed on time, yet the burst's p90 latency was
  ``route_serialized_factor`` times the lone request's and ``route_serialized_min_ms``
  longer: the requests waited on each other. The cause compares the server connections
  a worker held with the requests it served at once.
- ``OK`` otherwise.
"""

from __future__ import annotations

from collections import Counter

from geventprobe.app.routes import RouteRun, RoutesRun, first_error
from geventprobe.core import blocked
from geventprobe.core.stats import summarize
from geventprobe.record import BlockedStack, Evidence, RouteResult, Verdict
from geventprobe.settings import Thresholds
from geventprobe.worker.record import RoutePhase

# Ticks due this long after the burst's last answer still count: a hub blocked by the
# last request reports its lag when it runs again.
_TAIL_S = 0.05


def _failed(status: str) -> bool:
    """5xx, or no HTTP answer at all (reset, timeout, refused...)."""
    return not status.isdigit() or int(status) >= 500


def _max_lag_ms(workers: dict[int, RoutePhase], t0: float, t1: float) -> float:
    worst = 0.0
    for report in workers.values():
        for due, lag in zip(report.heartbeat_expected, report.heartbeat_lag):
            if t0 <= due <= t1 + _TAIL_S:
                worst = max(worst, lag)
    return round(worst * 1000, 3)


def _served(workers: dict[int, RoutePhase], t0: float, t1: float) -> dict[int, int]:
    """Worker pid → requests of the app it started during the burst."""
    return {pid: sum(1 for t in report.requests if t0 - 0.01 <= t <= t1)
            for pid, report in workers.items()}


def serialized_cause(served: dict[int, int], connections: dict[int, int], *,
                     what: str = "requests", setting: str = "gunicorn worker_connections",
                     default: str = ", 1000 by default") -> tuple[str, str]:
    """(cause, advice) of a SERIALIZED route, from the worker that served the most.

    ``what``, ``setting`` and ``default``: the words of another kind of work that waits on
    each other the same way (a celery worker's tasks: ``tasks``, its ``-c``).
    """
    one = what[:-1]
    if not served or not any(served.values()):
        return (f"the {what} waited on each other while the hub ran on time",
                f"look for what the {what} share: a connection, a pool, a lock")
    pid = max(served, key=lambda p: (served[p], -p))
    n, conns = served[pid], connections.get(pid)
    if conns is None:
        return (f"{n} concurrent {what} in one worker waited on each other while the hub "
                "ran on time (server connections not counted: the workers reach it through a "
                "unix socket)",
                f"look for what the {what} share: a connection, a pool, a lock")
    if conns <= 1 < n:
        return (f"{conns} server connection for {n} concurrent {what}: a connection shared "
                "between greenlets",
                f"give each {one} (greenlet) its own connection: a pool sized to the "
                f"concurrency a worker serves ({setting}), or a connection per {one}")
    if conns < n:
        return (f"{conns} server connections for {n} concurrent {what}: the pool is smaller "
                "than the concurrency",
                f"size the pool to the concurrency a worker serves ({setting}{default}), or "
                f"lower {setting.split(' ', 1)[-1] if what == 'requests' else 'it'} to the "
                "pool's size")
    return (f"{conns} server connections for {n} concurrent {what}, yet they waited on each "
            "other: a lock or a limit in the app, not the database connections",
            f"look for a lock, semaphore or single shared client around the {one}'s work")


def judge(run: RouteRun, workers: dict[int, RoutePhase], t: Thresholds) -> RouteResult:
    """One route's verdict, with every rule and the figures it was decided on."""
    route = str(run.route)
    n = len(run.burst)
    statuses = dict(Counter(status for status, _ in run.burst))
    failed = sum(1 for status, _ in run.burst if _failed(status))
    share = failed / n if n else 1.0
    lone_failed = _failed(run.lone_status)
    answered = [s * 1e6 for status, s in run.burst if not _failed(status)]
    burst = summarize(answered)
    lone_ms = round(run.lone_s * 1000, 3) if run.lone_s is not None and not lone_failed else None
    factor = (round(burst.p90_us / 1000 / lone_ms, 3)
              if burst.p90_us is not None and lone_ms else None)
    extra_ms = (burst.p90_us / 1000 - lone_ms) if factor is not None else 0.0
    lag_ms = _max_lag_ms(workers, run.t0, run.t1)
    served = _served(workers, run.t0, run.t1)
    events = [e for report in workers.values() for e in report.blocked]
    stacks: list[BlockedStack] = blocked.stacks(events, f"route {route}",
                                                (run.t0, run.t1 + _TAIL_S))
    error_line = first_error(run.log_lines) if (failed or lone_failed) else None
    shown = ", ".join(f"{k} ×{v}" for k, v in sorted(statuses.items()))
    rules = [
        Evidence(
            rule="route-failing", value=round(share, 4), threshold=t.route_failing_share,
            fired=lone_failed or (n > 0 and share > t.route_failing_share) or n == 0,
            phase="route",
            text=(f"{failed} of {n} concurrent requests failed ({shown or 'none sent'}); the "
                  f"lone request answered {run.lone_status} (limit: more than "
                  f"{t.route_failing_share:.0%} failed, or the lone request)")),
        Evidence(
            rule="route-hub-lag", value=lag_ms, threshold=t.route_hub_lag_ms,
            fired=lag_ms >= t.route_hub_lag_ms, phase="route",
            text=(f"max hub lag during the burst {lag_ms:.1f} ms "
                  f"(limit {t.route_hub_lag_ms:g} ms)")),
        Evidence(
            rule="route-serialized", value=factor if factor is not None else 0.0,
            threshold=t.route_serialized_factor,
            fired=(factor is not None and factor >= t.route_serialized_factor
                   and extra_ms >= t.route_serialized_min_ms),
            phase="route",
            text=(f"burst p90 {burst.p90_us / 1000:.1f} ms = {factor:.2f}× the lone request's "
                  f"{lone_ms:.1f} ms (limit {t.route_serialized_factor:g}× and "
                  f"{t.route_serialized_min_ms:g} ms more; {run.concurrency}× if the "
                  f"{run.concurrency} requests of a worker ran one at a time)"
                  if factor is not None else "no lone latency to compare the burst with")),
    ]
    fired = {e.rule for e in rules if e.fired}
    cause = advice = None
    if "route-failing" in fired:
        verdict = Verdict.FAILING
        cause = (f"the lone request answered {run.lone_status}" if lone_failed
                 else f"{failed} of {n} concurrent requests failed ({shown})")
        if error_line:
            cause += f": {error_line}"
        advice = ("fix the error the workers logged; under gevent, anything the app made in the "
                  "gunicorn master (preload_app: connections, Django's DatabaseWrapper) must be "
                  "made again in each worker: drop preload_app, or close them in post_fork")
    elif "route-hub-lag" in fired:
        verdict = Verdict.BLOCKING
        cause = f"the hub stalled {lag_ms:.0f} ms during the burst"
        if stacks:
            cause += f": {blocked.in_words(stacks[0])}"
        advice = ("move the CPU work or blocking call out of the request (a task queue), or "
                  "into gevent's threadpool / a process pool; patch with gevent before the "
                  "app imports what blocks")
    elif "route-serialized" in fired:
        verdict = Verdict.SERIALIZED
        cause, advice = serialized_cause(served, run.connections)
    else:
        verdict = Verdict.OK
    # The worker the cause speaks of: the one that served the most requests at once.
    busiest = max(served, key=lambda p: (served[p], -p)) if served else None
    connections = run.connections.get(busiest) if busiest is not None else None
    return RouteResult(
        route=route, verdict=verdict, concurrency=run.concurrency, lone_ms=lone_ms,
        lone_status=int(run.lone_status) if run.lone_status.isdigit() else None,
        burst=burst, burst_factor=factor, statuses=statuses, max_hub_lag_ms=lag_ms,
        server_connections=connections, evidence=rules, cause=cause, advice=advice,
        first_error=error_line, blocked_by=stacks,
        duration_s=round(max(0.0, run.t1 - run.t0), 3))


def judge_all(phase: RoutesRun | None, t: Thresholds) -> list[RouteResult]:
    """Every route's verdict; a route the phase could not measure is ERROR with why."""
    if phase is None:
        return []
    out = [judge(r, phase.workers, t) for r in phase.routes]
    if phase.error and not out:
        return [RouteResult(
            route="(all routes)", verdict=Verdict.ERROR, concurrency=0, lone_ms=None,
            lone_status=None, burst=summarize([]), burst_factor=None, statuses={},
            max_hub_lag_ms=0.0, server_connections=None, evidence=[], cause=phase.error)]
    if phase.error:  # measured, but some worker's report is missing: say so on each
        out = [r if r.verdict is not Verdict.OK else _distrusted(r, phase.error) for r in out]
    return out


def _distrusted(r: RouteResult, error: str) -> RouteResult:
    from dataclasses import replace

    return replace(r, verdict=Verdict.ERROR,
                   cause=f"the rules said OK, but {error}: the hub was not watched in every "
                         "worker")
