"""One run of probed WSGI workers, whatever server starts them (gunicorn, and next uWSGI).

The server (``WsgiServer``: gunicorn's is ``processes/gunicorn_workers.Boot``) is started
with the probe in every worker; ``run_workers`` then drives the run the same way for
every server: wait until every worker has opened its connections (``ready-<pid>.json``),
start sampling their CPU, say ``go``, collect one ``result-<pid>.json`` per worker, run the
request phase and the route phase (``routes.py``), and stop the server. Each worker
reports on its own files, typed records read by ``processes/run_dir.py``; what the run
produced is a ``WorkersRun``, which ``core/judge.py`` turns into a verdict.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from geventprobe.app import routes as route_phase
from geventprobe.app.http_load import LoadSpec, OpenLoopLoad
from geventprobe.processes import children, cpu
from geventprobe.processes.cpu import CpuSampler
from geventprobe.processes.run_dir import read_records, ready_port, say_go
from geventprobe.record import RequestFigures
from geventprobe.settings import Workload
from geventprobe.worker.probe_route import PATH as PROBE_ROUTE
from geventprobe.worker.probe_route import ROUTES_GO
from geventprobe.worker.record import ProbeResult, Ready

if TYPE_CHECKING:
    from geventprobe.core.builds import Build
    from geventprobe.core.progress import Listener
    from geventprobe.core.session import Session
    from geventprobe.core.target import Probed


class WsgiServer(Protocol):
    """A WSGI server started with the probe in every worker, as ``run_workers`` drives it."""

    name: str
    """How the user calls it (``gunicorn``), in the words of a failure."""
    run_dir: str
    """The run directory its workers write their records in (``processes/run_dir.py``)."""
    log_path: str
    """Its log, read to explain a failure and, in the route phase, its worker kills."""
    timeout: float
    """Its worker timeout (gunicorn's ``--timeout``), quoted by the evidence."""
    done: bool
    """Set once ``run_workers`` took it over."""

    def running(self) -> bool:
        """Its master still runs."""

    def wait_for(self, prefix: str, count: int, timeout: float,
                 pids: list[int] | None = None) -> dict | None:
        """Until ``count`` workers wrote ``<prefix>-<pid>.json``; None on timeout, when the
        master exits, or when a worker of ``pids`` died without writing it."""

    def failure(self, what: str, timeout: float, pids: list[int] | None = None,
                reported: dict | None = None) -> str:
        """Why ``what`` did not happen, in the server's words (one line)."""

    def refuse_boot(self, boot_timeout: float) -> None:
        """No worker got ready: raise ``ProbeError`` when the user's app says why (it failed
        to load, it was still importing); return when it does not."""

    def timed_out_pids(self) -> list[int]:
        """Workers it killed for a blocked hub (its worker timeout), from its whole log."""

    def timed_out_in(self, lines: list[str]) -> list[int]:
        """The same, from these lines of its log."""

    def log_tail(self) -> list[str]:
        """The last lines of its log, redacted."""

    def owned(self) -> contextlib.AbstractContextManager:
        """Stop and reap it when the block fails or returns early."""

    def quick_stop(self) -> None:
        """Every figure is in: stop it at once (its reaping may wait for
        ``finish_previous``)."""

    def finish_previous(self) -> None:
        """Reap the server of the previous run, still exiting."""

    def release(self) -> None:
        """Remove its run dir, unless it still exits in it."""


class AppTarget:
    """The target side of a user's WSGI app (``core/target.py``): the app is the run's one
    subject and one row (a ``GunicornApp``, a ``UwsgiApp``: frozen dataclasses with
    ``build`` and ``deployment``)."""

    def steps(self) -> int:
        """One row: the app."""
        return 1

    def prepare(self, listener: Listener) -> AppTarget:
        """Itself: its ``plan`` read the settings already."""
        return self

    def imports(self) -> Sequence[Build]:
        """None: the app imports what it imports, in its workers."""
        return []

    def probe(self, session: Session, listener: Listener) -> Probed:
        """The app, as one row."""
        from geventprobe.core.target import Probed

        listener.build_started(self.build.name, 0, 1)
        result = session.probe(self, label=self.build.name)
        listener.build_finished(result)
        return Probed([result])

    def app_record(self) -> dict | None:
        """The deployment as probed (``RunResult.app``)."""
        return self.deployment


@dataclass
class WorkersRun:
    """What one run of probed workers produced: their own records and the parent's samples."""

    results: list[ProbeResult] = field(default_factory=list)
    """Each worker's ``result-<pid>.json``, by pid."""
    cpu: CpuSampler | None = None
    error: str | None = None
    """Why the run did not produce every worker's result (None: it did)."""
    log_tail: list[str] = field(default_factory=list)
    timed_out_pids: list[int] = field(default_factory=list)
    """Workers the master killed for a blocked hub (gunicorn's "WORKER TIMEOUT")."""
    timeout_s: int = 0
    """The master's worker timeout for this run (gunicorn's ``--timeout``)."""
    ready_facts: dict = field(default_factory=dict)
    """A worker's facts from its ready file: all there is when no worker got to report."""
    requests: RequestFigures | None = None
    """The HTTP load's figures (None when the profile turned it off)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each step seen from here: ``boot`` (the previous build's workers
    exit meanwhile), ``reap previous``, ``probe``, ``requests``, ``routes``."""
    not_running: dict[int, str] = field(default_factory=dict)
    """Workers that did not run for part of the probe (stopped, or off every CPU), by pid,
    with what was seen: their figures say nothing about the driver."""
    routes: route_phase.RoutesRun | None = None
    """``run --app --route``: the route phase (None without routes)."""

    @property
    def worker_timeouts(self) -> int:
        """How many workers the master killed for a blocked hub."""
        return len(self.timed_out_pids)


def run_workers(server: WsgiServer, workload: Workload, dsn: str, *,
                routes: list[route_phase.Route] | None = None,
                started: float | None = None) -> WorkersRun:
    """Run the probe once in ``server``'s workers (started with ``routes_timeout_s(routes)``
    when there are routes) and collect what they report; the server is stopped and its run
    dir removed (or left to ``finish_previous``) when it returns or raises.

    ``routes``: the user's routes to drive after the request phase (``routes.py``).
    ``started``: when the row began (None: now), for the ``boot`` timing.
    """
    run = WorkersRun()
    started = time.monotonic() if started is None else started
    server.done = True
    run_dir = server.run_dir
    run.timeout_s = server.timeout
    # Workers the server killed for its worker timeout before the route phase: the driver
    # probe's (and the request phase's) business; during a route, that route's (routes.py).
    before_routes: list[int] | None = None
    try:
        with server.owned():
            ready = server.wait_for("ready", workload.workers, workload.boot_timeout_s)
            # What the boot cost this row: ~0 when it booted ahead, with the others.
            run.timings["boot"] = time.monotonic() - started
            if ready is None:
                server.refuse_boot(workload.boot_timeout_s)
                early = read_records(run_dir, "result")
                if early:  # the probe failed before it got ready: its own words say why
                    run.results = list(early.values())
                else:
                    run.error = server.failure(f"{server.name} workers did not get ready",
                                               workload.boot_timeout_s)
                return run
            pids = sorted(ready)
            run.ready_facts = next((r.facts for r in ready.values() if r.facts), {})
            # The previous build's server exited while this one booted: it is gone before
            # anything is measured here.
            reaping = time.monotonic()
            server.finish_previous()
            run.timings["reap previous"] = time.monotonic() - reaping
            probing = time.monotonic()
            with CpuSampler(pids) as sampler:
                # The workers take turns in the connect phase in this order (probe.py).
                say_go(run_dir, pids)
                results = server.wait_for("result", workload.workers,
                                          workload.probe_timeout_s(), pids)
            run.cpu = sampler
            run.timings["probe"] = time.monotonic() - probing
            # A worker blocked by its driver still wakes for every reply from the server.
            run.not_running = sampler.not_running(max(5.0, 2 * workload.wait_seconds + 2))
            if results is None:
                results = {p: d for p, d in read_records(run_dir, "result").items()
                           if p in pids}
                run.error = server.failure("the probe did not finish in every worker",
                                           workload.probe_timeout_s(), pids, results)
            run.results = [results[p] for p in sorted(results)]
            spec = _load_spec(workload, ready)
            if spec is not None and run.error is None and run.results and \
                    not any(r.error for r in run.results):
                loading = time.monotonic()
                run.requests = _drive_requests(server, spec, workload)
                run.timings["requests"] = time.monotonic() - loading
            if routes and run.error is None and run.results and \
                    not any(r.error for r in run.results):
                before_routes = server.timed_out_pids()
                routing = time.monotonic()
                run.routes = _drive_routes(server, routes, workload, pids, ready, dsn)
                run.routes.timeout_s = run.timeout_s
                run.timings["routes"] = time.monotonic() - routing
            server.quick_stop()
    finally:
        run.log_tail = server.log_tail()
        run.timed_out_pids = (server.timed_out_pids() if before_routes is None
                              else before_routes)
        server.release()
    return run




def routes_timeout_s(routes: list[route_phase.Route] | None, workload: Workload
                     ) -> float | None:
    """How long the workers stay for the route phase at most (None: no routes)."""
    return route_phase.worker_timeout_s(routes, workload.http_timeout_s) if routes else None


def _drive_requests(server: WsgiServer, spec: LoadSpec, workload: Workload) -> RequestFigures:
    """The request phase, after the verdict's windows: the workers keep their greenlets
    waiting on the server while we send open-loop requests at their probe route."""
    with OpenLoopLoad(spec) as load:
        with open(os.path.join(server.run_dir, "http-go"), "w"):
            pass
        load.start()
        end = time.monotonic() + workload.http_seconds
        while time.monotonic() < end and server.running():
            children.check_guards()
            time.sleep(0.05)
        # A blocked hub answers late: wait for what is in flight (bounded per request).
        figures = load.stop(grace_s=workload.http_timeout_s, guard=children.check_guards)
    # Errors from a process of ours that died meanwhile (the --rtt proxy, the server) are
    # not the app's: the run stops on it rather than report them as the requests' figures.
    children.check_guards()
    return figures


def _drive_routes(server: WsgiServer, routes: list, workload: Workload, pids: list[int],
                  ready: dict[int, Ready], dsn: str) -> route_phase.RoutesRun:
    """The route phase, after the request phase, in the same workers (``routes.py``)."""
    started = time.monotonic()
    out = route_phase.RoutesRun(server_port=route_phase.server_port(dsn), asked=list(routes))
    run_dir = server.run_dir
    port = ready_port(ready)
    # The request phase's answers are all in: the workers may close its connections now.
    with open(os.path.join(run_dir, ROUTES_GO), "w"):
        pass
    with route_phase.phase_files(run_dir):
        # Each worker hands over once its request phase is over.
        wait = workload.http_seconds + workload.http_timeout_s + 30
        got = server.wait_for("route-ready", len(pids), wait, pids)
        if got is None or port is None:
            out.error = server.failure("the workers did not get ready for the routes", wait,
                                       pids, got)
            return out
        try:
            out.routes = route_phase.drive(
                routes, port=port, pids=pids, concurrency=workload.route_concurrency,
                timeout_s=workload.http_timeout_s, log_path=server.log_path, dsn=dsn,
                guard=children.check_guards, alive=server.running, run_dir=run_dir,
                clock=lambda: cpu.clocks(pids), timed_out_in=server.timed_out_in)
        except route_phase.GunicornGone as gone_:
            # Its workers go with it: what they answered since says nothing about the app.
            out.routes, out.stopped = gone_.args[0], True
            out.error = server.failure("the route phase was cut short", 0)
            out.seconds = round(time.monotonic() - started, 3)
            return out
    reports = server.wait_for("routes", len(pids), 30, pids)
    if reports is None:
        reports = read_records(run_dir, "routes")
        out.error = server.failure("a worker did not report its route phase", 30, pids,
                                   reports)
    # Workers the server started meanwhile in place of killed ones watched the later routes.
    late = sorted(p for p in read_records(run_dir, "route-ready") if p not in pids)
    if late:
        reports = {**reports, **(server.wait_for("routes", len(late), 5, late)
                                 or read_records(run_dir, "routes"))}
    out.pids = pids
    out.workers = {p: reports[p] for p in sorted(reports) if p in pids or p in late}
    out.seconds = round(time.monotonic() - started, 3)
    return out


def _load_spec(workload: Workload, ready: dict[int, Ready]) -> LoadSpec | None:
    """The HTTP load for this run: at the port(s) the workers reported, at the profile's rate."""
    ports = tuple(sorted({r.port for r in ready.values() if r.port is not None}))
    if workload.http_rate <= 0 or not ports:
        return None
    query = (f"SELECT pg_sleep({workload.http_query_ms / 1000:g})" if workload.http_query_ms > 0
             else "SELECT 1")
    return LoadSpec(ports=ports, path=PROBE_ROUTE, rate=workload.http_rate,
                    max_requests=workload.http_max_requests,
                    max_seconds=workload.http_seconds, timeout_s=workload.http_timeout_s,
                    query=query)
