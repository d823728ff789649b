"""The verdict of each route of the user's app: figures in, class out, rules with numbers.

Pure functions of recorded figures (``routes.RouteRun`` and the workers' route-phase
reports), so they are tested exactly on recorded runs. The order is the severity:

- ``BLOCKING`` first when gunicorn killed a worker for ``WORKER TIMEOUT`` during the route:
  its hub did not run for longer than gunicorn's timeout, and the requests it dropped are
  the consequence, not the app failing.
- ``ERROR`` (not measured) when the route never did its work: gunicorn answered 4xx itself
  (no request reached the app: a request line over ``limit_request_line``, a malformed
  request), or the app answered 404, 405 or 410 (no such route, or not for that method).
- ``FAILING``: the lone request, or more than ``route_failing_share`` of the burst,
  answered 5xx, was reset or timed out. The cause is the exception the workers logged most
  (type, message and the user's frame), read against the deployment (a known error's
  cause and fix).
- ``BLOCKING``: a worker's heartbeat was ``route_hub_lag_ms`` late during the burst: the
  hub stalled (the driver verdict's meaning). Who blocked comes from gevent's monitor
  thread and the stall watch (a call that keeps the GIL); the cause says whether it was a
  name bound before gevent patched, the driver waiting in C, a call that kept the GIL, or
  CPU work / a blocking call.
- ``SERIALIZED``: the hub stayed on time, yet what the CPU does not explain of the burst's
  p90 latency was ``route_serialized_factor`` times the lone request's and
  ``route_serialized_min_ms`` longer: the requests waited on each other. A gevent worker
  runs one request's Python at a time, so the time the busiest worker was running or
  waiting for a core until the p90 answer is taken off first (``route_cpu``): requests that
  took turns on the CPU did not wait on each other (a note says so, with the figures). The
  cause is where they waited (the workers sampled their parked request greenlets): a pool of
  N for C, one shared connection, a lock of the app's.
- ``OK`` otherwise.

Before the lone request every worker served the route once (``routes.warm_up``); what that
warm-up stalled (a worker's first request: Django imports its URLconf then) is a note on the
route with who blocked, never its verdict.

Any other 3xx or 4xx answer (a redirect to a login page, 401, 403, a 400 for an empty body)
keeps the verdict of the rules and adds a ``note``: requests carry no cookies and no body,
so what was measured is that answer, not the route's work.

The causes themselves are ``core/route_causes.py``'s, in words that fit the deployment
(``Deployment``: preload or not, the burst's concurrency and server connections).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from http import HTTPStatus

from geventprobe.app import route_cpu
from geventprobe.app.routes import RouteRun, RoutesRun, first_error
from geventprobe.core import blocked, route_causes
from geventprobe.core.known_errors import Deployment
from geventprobe.core.stats import summarize
from geventprobe.record import (
    BlockedStack,
    Evidence,
    RouteCpu,
    RouteResult,
    RouteWarmUp,
    Verdict,
)
from geventprobe.settings import Thresholds
from geventprobe.worker.record import RoutePhase

# Ticks due this long after the burst's last answer still count: a hub blocked by the
# last request reports its lag when it runs again.
_TAIL_S = 0.05


# The app's answers that say the route as given does not exist: nothing of its work ran.
_NO_SUCH_ROUTE = {404, 405, 410}
# Why gunicorn itself refuses a request before the app sees it, and the fix.
_GUNICORN_REFUSED = {
    414: ("the request line is longer than gunicorn's limit_request_line (4094 bytes unless "
          "your config sets it)", "shorten the route (its query string), or raise "
          "limit_request_line in your gunicorn config"),
    431: ("the request's headers are larger than gunicorn's limits",
          "raise limit_request_field_size in your gunicorn config"),
    400: ("gunicorn could not parse the request", "write the route as a URL path "
          "(geventprobe percent-encodes what is not ASCII; check what is left)"),
}


def _phrase(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _failed(status: str) -> bool:
    """5xx, or no HTTP answer at all (reset, timeout, refused...)."""
    return not status.isdigit() or int(status) >= 500


def _max_lag_ms(workers: dict[int, RoutePhase], t0: float, t1: float) -> float:
    """The latest heartbeat in any worker between ``t0`` and ``t1``, less the time its
    thread waited for a core meanwhile: on a loaded machine the kernel can hold a healthy
    worker's hub off a core for 75 ms and more (once in 78 loaded runs of a quick Django
    route), which is no request holding it (docs/routes.md)."""
    worst = 0.0
    for report in workers.values():
        waited = report.heartbeat_waited
        for i, (due, lag) in enumerate(zip(report.heartbeat_expected, report.heartbeat_lag)):
            if t0 <= due <= t1 + _TAIL_S:
                worst = max(worst, lag - (waited[i] if i < len(waited) else 0.0))
    return round(worst * 1000, 3)


def _served(workers: dict[int, RoutePhase], t0: float, t1: float) -> dict[int, int]:
    """Worker pid → requests of the app it started during the burst."""
    return {pid: sum(1 for t in report.requests if t0 - 0.01 <= t <= t1)
            for pid, report in workers.items()}


_LARGE_ANSWER = 1 << 20
"""An answer this large (bytes) takes transfer time that concurrent answers share."""


def _large_answers(n: int | None, body_bytes: int | None) -> route_causes.Explained | None:
    """SERIALIZED with no server connection held and large answers: transfer time shared."""
    if body_bytes is None or body_bytes < _LARGE_ANSWER:
        return None
    return route_causes.Explained(
        kind=None,
        cause=(f"each answer was {body_bytes / 1e6:,.1f} MB, and {n or 'several'} went out of "
               "one worker at once: they share its CPU and the network (here loopback and "
               "geventprobe's own client), so together they take longer; no server connection "
               "was held: not the database"),
        fix=("serve large files from a static file server or a CDN (or hand them to it: "
             "X-Accel-Redirect, X-Sendfile), or give the workers more CPU; if the answers are "
             "meant to be that large, this is transfer time, not waiting"))


def _not_served(run: RouteRun, served: dict[int, int]) -> tuple[str, str, str] | None:
    """(evidence, cause, advice) when the route never did its work; None when it did."""
    status = run.lone_status
    if not status.isdigit() or not 400 <= int(status) < 500:
        return None
    code = int(status)
    same = sum(1 for s, _ in run.burst if s == status)
    shown = (f"the lone request answered {_phrase(code)}"
             + (f", and so did {same} of {len(run.burst)} in the burst" if run.burst else ""))
    if served and not any(served.values()):
        why, fix = _GUNICORN_REFUSED.get(code, ("gunicorn refused the request", "check the "
                                                "route against your gunicorn settings"))
        return (shown + "; none reached your app",
                f"gunicorn answered {_phrase(code)} itself, before your app saw the request: "
                f"{why}: nothing of the route's work was measured", fix)
    if code in _NO_SUCH_ROUTE:
        what = (f"your app does not take {run.route.method} at {run.route.path}"
                if code == 405 else "your app has no such route")
        return (shown, f"{what} ({_phrase(code)}): nothing of the route's work was measured",
                "give a path (and method: --route 'POST /login') your app serves, with what "
                "it needs in the path itself: requests carry no body and no cookies")
    return None


def _note(run: RouteRun) -> str | None:
    """A 3xx or 4xx answer that still counts: say what was measured (None for a 2xx/5xx)."""
    status = run.lone_status
    if not status.isdigit() or not 300 <= int(status) < 500:
        return None
    code = int(status)
    to = f" to {run.location}" if run.location and 300 <= code < 400 else ""
    return (f"your app answered {_phrase(code)}{to}: requests carry no cookies, no credentials "
            "and no body, and redirects are not followed, so these figures are those of that "
            "answer, not of the work behind it: pick a route that does its work without them")


def _timed_out(run: RouteRun, lone_failed: bool, failed: int, n: int
               ) -> route_causes.Explained | None:
    """A FAILING route whose failures were all timeouts: no error, the route is slower than
    the probe waits for one request (None when something else failed)."""
    timeouts = (run.lone_status == "timeout") or (
        not lone_failed and all(s == "timeout" for s, _ in run.burst if _failed(s)))
    if not timeouts:
        return None
    who = "the lone request" if lone_failed else f"{failed} of {n} concurrent requests"
    return route_causes.Explained(
        kind="timeout",
        cause=(f"{who} got no answer within http_timeout_s = {run.timeout_s:g} s (the "
               "profile's limit for one request)"),
        fix=("if the route is meant to take that long, raise http_timeout_s in a profile "
             "([workload] http_timeout_s = 120, --config FILE); otherwise find what it waits "
             "for (a slow query, an external call, a lock) and bound it: a statement_timeout, "
             "a client timeout"))


def _serialized(run: RouteRun, burst_p90_ms: float | None, lone_ms: float | None,
                cpu: RouteCpu | None, t: Thresholds) -> tuple[Evidence, bool]:
    """The SERIALIZED rule on what the CPU does not explain of the burst's p90, and whether
    the same figures without that subtraction would have fired (the CPU note's case)."""
    if burst_p90_ms is None or not lone_ms:
        return Evidence(rule="route-serialized", value=0.0,
                        threshold=t.route_serialized_factor, fired=False, phase="route",
                        text="no lone latency to compare the burst with"), False
    factor, k = t.route_serialized_factor, t.route_serialized_min_ms
    raw = burst_p90_ms >= factor * lone_ms and burst_p90_ms - lone_ms >= k
    left = cpu.unexplained_ms if cpu is not None else burst_p90_ms
    value = left / lone_ms
    if cpu is None:
        told = (f"burst p90 {burst_p90_ms:.1f} ms = {value:.2f}× the lone request's "
                f"{lone_ms:.1f} ms (the workers' CPU was not read)")
    else:
        told = (f"burst p90 {burst_p90_ms:.1f} ms = {burst_p90_ms / lone_ms:.2f}× the lone "
                f"request's {lone_ms:.1f} ms; the busiest worker ran or waited for a core "
                f"{cpu.busy_ms:.1f} ms of it, leaving {left:.1f} ms = {value:.2f}× the lone "
                "request that the CPU does not explain")
    return Evidence(
        rule="route-serialized", value=round(value, 3), threshold=factor,
        fired=value >= factor and left - lone_ms >= k, phase="route",
        text=(f"{told} (limit {factor:g}× and {k:g} ms more; {run.concurrency}× if the "
              f"{run.concurrency} requests of a worker waited on each other one at a time)")
    ), raw


def _warm_up(run: RouteRun, workers: dict[int, RoutePhase], events: list, starts: str,
             t: Thresholds, blocking: bool = False) -> RouteWarmUp | None:
    """What the warm-up before the lone request saw: the workers' first requests of the
    route. A stall of ``route_hub_lag_ms`` or more is a note, with who blocked, unless the
    route is BLOCKING (``blocking``): then every request stalls the hub, not the first
    ones only, and the note's fix (do it as the worker starts) would be a wrong one."""
    w = run.warm_up
    if w is None:
        return None
    lag_ms = _max_lag_ms(workers, w.t0, w.t1)
    stacks = blocked.stacks(events, f"warm-up {run.route}", (w.t0, w.t1 + _TAIL_S))
    note = None
    if lag_ms >= t.route_hub_lag_ms and not blocking:
        who = f": {blocked.in_words(stacks[0])}" if stacks else ""
        django = any("django/urls/" in f for s in stacks[:1] for f in s.frames)
        how = ("Django imports the URLconf on a worker's first request: import it as the "
               "worker starts (in wsgi.py, after get_wsgi_application(): "
               "django.urls.get_resolver().url_patterns)" if django else
               f"Do that work as the worker starts, before it serves ({starts})")
        note = (f"each worker's first requests of the route (the warm-up before the "
                f"measurement, {w.requests} requests) stalled its hub {lag_ms:.0f} ms{who}. "
                "Each worker's first users wait that long after every deploy or restart. "
                f"{how}, or make it cheaper")
    return RouteWarmUp(
        requests=w.requests, workers_warmed=len(w.warmed), workers=w.workers,
        seconds=round(max(0.0, w.t1 - w.t0), 3), max_hub_lag_ms=lag_ms,
        statuses=dict(w.statuses), blocked_by=stacks if note else [], note=note)


def judge(run: RouteRun, workers: dict[int, RoutePhase], t: Thresholds,
          deployment: Deployment | None = None, timeout_s: float | None = None
          ) -> RouteResult:
    """One route's verdict, with every rule and the figures it was decided on.

    ``deployment``: how the app runs (preload, its directory, the driver's own BLOCKING
    cause when it waits in C); the burst's concurrency and connections are added here.
    ``timeout_s``: gunicorn's worker timeout, quoted when it killed a worker meanwhile.
    """
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
    p90_ms = burst.p90_us / 1000 if burst.p90_us is not None else None
    lag_ms = _max_lag_ms(workers, run.t0, run.t1)
    served = _served(workers, run.t0, run.t1)
    cpu = route_cpu.share([(s, c) for (status, s), c in zip(run.burst, run.clocks)
                           if not _failed(status)], run.clocks_due, served, run.lone_cpu_s)
    events = [e for report in workers.values() for e in report.blocked]
    stacks: list[BlockedStack] = blocked.stacks(events, f"route {route}",
                                                (run.t0, run.t1 + _TAIL_S))
    shown = ", ".join(f"{k} ×{v}" for k, v in sorted(statuses.items()))
    not_served = None if run.timed_out else _not_served(run, served)
    serialized, cpu_only = _serialized(run, p90_ms, lone_ms, cpu, t)
    rules = []
    if run.timed_out:
        pids = ", ".join(str(p) for p in run.timed_out)
        limit = f"your timeout {timeout_s:g} s" if timeout_s else "its timeout"
        kills = (deployment or Deployment()).kills.format(pids=pids)
        rules.append(Evidence(
            rule="route-worker-timeout", value=float(len(run.timed_out)), threshold=1.0,
            fired=True, phase="route",
            text=(f"{kills} during this route: its hub did not run for longer than {limit}")))
    if not_served is not None:
        rules.append(Evidence(rule="route-not-served", value=float(run.lone_status),
                              threshold=400.0, fired=True, phase="route", text=not_served[0]))
    rules += [
        Evidence(
            rule="route-failing", value=round(share, 4), threshold=t.route_failing_share,
            fired=lone_failed or (n > 0 and share > t.route_failing_share) or n == 0,
            phase="route",
            text=(f"{failed} of {n} concurrent requests failed ({shown or 'none sent'}); the "
                  f"lone request answered {run.lone_status} (limit: more than "
                  f"{t.route_failing_share:.0%} failed, or the lone request)"
                  if not run.burst_skipped else
                  f"the lone request answered {run.lone_status}; {run.burst_skipped}")),
        Evidence(
            rule="route-hub-lag", value=lag_ms, threshold=t.route_hub_lag_ms,
            fired=lag_ms >= t.route_hub_lag_ms, phase="route",
            text=(f"max hub lag during the burst {lag_ms:.1f} ms, not counting the time the "
                  f"worker waited for a core (limit {t.route_hub_lag_ms:g} ms)")),
        serialized,
    ]
    fired = {e.rule for e in rules if e.fired}
    # The worker the cause speaks of: the one that served the most requests at once.
    busiest = max(served, key=lambda p: (served[p], -p)) if served else None
    connections = run.connections.get(busiest) if busiest is not None else None
    d = replace(deployment or Deployment(),
                concurrency=served[busiest] if busiest is not None else None,
                connections=connections)
    explained = None
    if "route-worker-timeout" in fired:
        verdict = Verdict.BLOCKING
        limit = f" ({timeout_s:g} s)" if timeout_s else ""
        head = (f"the hub was blocked longer than {d.timeout}{limit}, so "
                f"{d.killer} killed the worker and dropped its requests")
        explained = route_causes.for_blocking(stacks, workers, d, lag_ms)
        # Who blocked, when caught, and its fix; the head says what gunicorn did about it.
        cause = head + explained.cause.partition(" during the burst")[2] if stacks else head
        explained = replace(explained, cause=cause, fix=(
            explained.fix + "; until then, this route takes workers down under load with "
            "this timeout"))
    elif not_served is not None:
        verdict = Verdict.ERROR
        explained = route_causes.Explained(kind="not-served", cause=not_served[1],
                                           fix=not_served[2])
    elif "route-failing" in fired:
        verdict = Verdict.FAILING
        what = (f"the lone request answered {run.lone_status}" if lone_failed
                else f"{failed} of {n} concurrent requests failed ({shown})")
        explained = _timed_out(run, lone_failed, failed, n)
        if explained is None:
            explained = route_causes.for_failing(run.log_lines, d, first_error(run.log_lines))
            explained = replace(explained, cause=f"{what}: {explained.cause}")
    elif "route-hub-lag" in fired:
        verdict = Verdict.BLOCKING
        explained = route_causes.for_blocking(stacks, workers, d, lag_ms)
    elif "route-serialized" in fired:
        verdict = Verdict.SERIALIZED
        explained = ((connections == 0 and _large_answers(d.concurrency, run.body_bytes))
                     or route_causes.for_serialized(workers, (run.t0, run.t1), d))
    else:
        verdict = Verdict.OK
    if cpu is not None and cpu_only and verdict is Verdict.OK and p90_ms and lone_ms:
        # Read as SERIALIZED without the CPU's part: say what the burst's time was.
        cpu = replace(cpu, note=route_cpu.note(cpu, n, p90_ms, lone_ms))
    return RouteResult(
        route=route, verdict=verdict, concurrency=run.concurrency, lone_ms=lone_ms,
        lone_status=int(run.lone_status) if run.lone_status.isdigit() else None,
        burst=burst, burst_factor=factor, statuses=statuses, max_hub_lag_ms=lag_ms,
        server_connections=connections, evidence=rules,
        cause=explained.cause if explained else None,
        advice=explained.fix if explained else None,
        first_error=explained.error if explained else None, blocked_by=stacks,
        duration_s=round(max(0.0, run.t1 - run.t0), 3),
        cause_kind=explained.kind if explained else None,
        error_at=explained.error_at if explained else None,
        waited_at=list(explained.waited_at) if explained else [],
        note=None if verdict is Verdict.ERROR else _note(run), body_bytes=run.body_bytes,
        cpu=cpu, warm_up=_warm_up(run, workers, events, d.worker_starts, t,
                                  blocking=verdict is Verdict.BLOCKING))


def _unmeasured(route: str, cause: str) -> RouteResult:
    return RouteResult(
        route=route, verdict=Verdict.ERROR, concurrency=0, lone_ms=None, lone_status=None,
        burst=summarize([]), burst_factor=None, statuses={}, max_hub_lag_ms=0.0,
        server_connections=None, evidence=[], cause=cause)


def judge_all(phase: RoutesRun | None, t: Thresholds, deployment: Deployment | None = None
              ) -> list[RouteResult]:
    """Every route's verdict; a route the phase could not measure is ERROR with why."""
    if phase is None:
        return []
    if phase.stopped:  # gunicorn's master died: its workers' answers say nothing of the app
        return [_unmeasured(str(r), phase.error or "the route phase was cut short")
                for r in (phase.asked or [r.route for r in phase.routes])]
    out = [judge(r, phase.workers, t, deployment, phase.timeout_s) for r in phase.routes]
    if phase.error and not out:
        return [_unmeasured("(all routes)", phase.error)]
    if phase.error:  # measured, but some worker's report is missing: say so on each...
        missing = set(phase.pids) - set(phase.workers)
        gone: set[int] = set()
        for i, (run, r) in enumerate(zip(phase.routes, out)):
            # ...route that worker was alive for: once gunicorn killed it (WORKER TIMEOUT),
            # later routes were served without it, by workers that did report.
            if r.verdict is Verdict.OK and (missing - gone or not phase.pids):
                out[i] = _distrusted(r, phase.error)
            gone |= set(run.timed_out)
    return out


def _distrusted(r: RouteResult, error: str) -> RouteResult:
    return replace(r, verdict=Verdict.ERROR,
                   cause=f"the rules said OK, but {error}: the hub was not watched in every "
                         "worker")
