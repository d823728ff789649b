"""Run the probe under real gunicorn gevent workers: the built-in harness, or the user's app.

Starts ``gunicorn -k gevent -w N`` on a free loopback port (the harness app and config,
or the user's own through ``worker/app_conf.py``), waits until every worker has opened
its connections (``ready-<pid>.json``), starts sampling the workers' CPU, says ``go``,
collects one ``result-<pid>.json`` per worker, runs the request and route phases, and
stops gunicorn. Each worker reports on its own files, typed records read by
``run_dir.py``; nothing is parsed out of stdout or the log, which is only read to
explain a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil

from geventprobe.app import routes as route_phase
from geventprobe.app.http_load import LoadSpec, OpenLoopLoad
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children, cpu
from geventprobe.processes.cpu import CpuSampler
from geventprobe.processes.run_dir import WorkersRun, gone, read_records, ready_port, say_go
from geventprobe.processes.run_dir import wait_for as _wait_records
from geventprobe.record import RequestFigures
from geventprobe.settings import Thresholds, Workload
from geventprobe.worker.probe_route import PATH as PROBE_ROUTE
from geventprobe.worker.record import AppError, Ready

HARNESS_CONFIG = "python:geventprobe.worker.harness_conf"
HARNESS_APP = "geventprobe.worker.harness_app:application"


def _log_tail(path: str, lines: int = 30) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [redact(ln.rstrip()) for ln in f.readlines()[-lines:]]
    except OSError:
        return []


def _explain_exit(log: list[str], fallback: bool = True) -> str | None:
    """The most telling line of a gunicorn log that ended early; without ``fallback``,
    None rather than its last line when no line tells of an error."""
    for needle in ("Error", "error", "Exception", "failed to boot", "Reason:"):
        for line in reversed(log):
            if needle in line:
                return line.strip()
    if not fallback:
        return None
    return log[-1].strip() if log else "no output"


def gunicorn_argv(workers: int, timeout: int, preload: bool, *, python: str | None = None
                  ) -> list[str]:
    """The gunicorn command line for the built-in harness (no secrets on it).

    ``python``: the interpreter to run gunicorn with (a version matrix's isolated one).
    """
    argv = [
        python or sys.executable, "-m", "gunicorn",
        "--worker-class", "gevent", "--workers", str(workers),
        "--bind", "127.0.0.1:0",
        "--config", HARNESS_CONFIG,
        "--timeout", str(timeout), "--graceful-timeout", "3",
        "--log-level", "info", "--error-logfile", "-",
    ]
    if preload:
        argv.append("--preload")
    argv.append(HARNESS_APP)
    return argv


@dataclasses.dataclass
class Boot:
    """A gunicorn started for one run of the probe (``boot``), maybe ahead of its turn."""

    proc: subprocess.Popen
    run_dir: str
    log_path: str
    timeout: float
    """gunicorn's ``--timeout`` (the worker timeout) that applies."""
    started: float
    """When it was started (``time.monotonic``)."""
    done: bool = False
    """``run_build`` took it over (or ``discard`` stopped it)."""


def boot(build_env: dict[str, str], workload: Workload, dsn: str, preload: bool, *,
         python: str | None = None, base_env: dict[str, str] | None = None,
         argv: list[str] | None = None, cwd: str | None = None, keep_cmd_args: bool = False,
         thresholds: Thresholds | None = None, routes: list[route_phase.Route] | None = None,
         timeout_s: float | None = None, go_wait_s: float = 0.0) -> Boot:
    """Start gunicorn for ``run_build`` (same arguments); its workers boot and wait for go.

    ``go_wait_s``: how long before its turn it is started (``Session.boot_ahead``: every
    build of a run boots at once, before any is measured): the workers wait that much
    longer for the parent's go before they give up.
    """
    run_dir = children.make_temp_dir("geventprobe-run-")
    try:
        log_path = os.path.join(run_dir, "gunicorn.log")
        env = dict(os.environ if base_env is None else base_env)
        if not keep_cmd_args:  # the built-in harness runs as we say, not as the shell says
            env.pop("GUNICORN_CMD_ARGS", None)
        env.update(build_env)
        env.update(
            GEVENTPROBE_RUN_DIR=run_dir,
            # Through the environment, not argv: /proc/<pid>/environ is readable by us alone.
            GEVENTPROBE_DSN=dsn,
            GEVENTPROBE_WORKLOAD=json.dumps(dict(workload.to_worker(thresholds),
                                                 go_wait_s=go_wait_s)),
            PYTHONUNBUFFERED="1",
        )
        if routes:  # the workers stay for the route phase, this long at most
            env["GEVENTPROBE_ROUTES_TIMEOUT_S"] = str(
                route_phase.worker_timeout_s(routes, workload.http_timeout_s))
        # A hub blocked for a whole window must not get the worker killed by the master
        # (unless the profile sets the timeout, as a deployment's gunicorn --timeout would).
        timeout = workload.worker_timeout_s or int(30 + workload.blocked_seconds())
        started = time.monotonic()
        proc = children.spawn(argv or gunicorn_argv(workload.workers, timeout, preload,
                                                    python=python),
                              env=env, log_path=log_path, cwd=cwd or run_dir)
    except BaseException:
        children.remove_temp_dir(run_dir)
        raise
    return Boot(proc=proc, run_dir=run_dir, log_path=log_path, started=started,
                timeout=timeout if argv is None or timeout_s is None else timeout_s)


def discard(booted: Boot) -> None:
    """Stop a gunicorn ``boot`` started that ``run_build`` never took over (the run ended
    before its turn), and remove its run dir."""
    if booted.done:
        return
    booted.done = True
    children.stop(booted.proc, signal.SIGINT, timeout=10)
    children.remove_temp_dir(booted.run_dir)


def run_build(build_env: dict[str, str], workload: Workload, dsn: str, preload: bool, *,
              python: str | None = None, base_env: dict[str, str] | None = None,
              argv: list[str] | None = None, cwd: str | None = None,
              keep_cmd_args: bool = False, thresholds: Thresholds | None = None,
              routes: list[route_phase.Route] | None = None,
              timeout_s: float | None = None, booted: Boot | None = None) -> WorkersRun:
    """Run the probe once under gunicorn with ``build_env`` on top of our environment.

    ``python`` and ``base_env`` run it in another environment instead (a version
    matrix's isolated one, whose ``PYTHONPATH`` holds only the worker shim).
    ``argv``, ``cwd`` and ``keep_cmd_args`` run the user's own app and gunicorn config
    instead of the harness app (``run --app``: ``app/gunicorn_app.py`` builds the command
    line, and ``GUNICORN_CMD_ARGS`` applies as in their deployment). ``thresholds`` go to
    the workers so they stop repeating a measurement whose verdict is already decided.
    ``routes``: the user's routes to drive after the request phase (``app/routes.py``).
    ``timeout_s``: gunicorn's worker timeout when ``argv`` sets its own (the user's config:
    the evidence of a WORKER TIMEOUT quotes the timeout that really applied).
    ``booted``: the gunicorn ``boot`` started for it ahead of its turn (the same arguments);
    None: it is started now.
    """
    run = WorkersRun()
    started = time.monotonic()
    if booted is None:
        booted = boot(build_env, workload, dsn, preload, python=python, base_env=base_env,
                      argv=argv, cwd=cwd, keep_cmd_args=keep_cmd_args, thresholds=thresholds,
                      routes=routes, timeout_s=timeout_s)
    booted.done = True
    proc, run_dir, log_path = booted.proc, booted.run_dir, booted.log_path
    run.timeout_s = booted.timeout
    # Workers gunicorn killed for WORKER TIMEOUT before the route phase: the driver probe's
    # (and the request phase's) business; during a route, that route's (``routes.py``).
    before_routes: list[int] | None = None
    try:
        with _owned(proc):
            ready = _wait_for(run_dir, "ready", workload.workers, workload.boot_timeout_s, proc)
            # What the boot cost this row: ~0 when it booted ahead, with the others.
            run.timings["boot"] = time.monotonic() - started
            if ready is None:
                _raise_app_error(run_dir, preload)
                if argv is not None:  # the user's app, imported the way they deploy it
                    _raise_still_importing(run_dir, proc, workload.boot_timeout_s, preload)
                early = read_records(run_dir, "result")
                if early:  # the probe failed before it got ready: its own words say why
                    run.results = list(early.values())
                else:
                    run.error = _failure(proc, log_path, "gunicorn workers did not get ready",
                                         workload.boot_timeout_s)
                return run
            pids = sorted(ready)
            run.ready_facts = next((r.facts for r in ready.values() if r.facts), {})
            # The previous build's gunicorn exited while this one booted: it is gone before
            # anything is measured here.
            reaping = time.monotonic()
            finish_previous()
            run.timings["reap previous"] = time.monotonic() - reaping
            probing = time.monotonic()
            with CpuSampler(pids) as sampler:
                # The workers take turns in the connect phase in this order (probe.py).
                say_go(run_dir, pids)
                results = _wait_for(run_dir, "result", workload.workers,
                                    workload.probe_timeout_s(), proc, pids)
            run.cpu = sampler
            run.timings["probe"] = time.monotonic() - probing
            # A worker blocked by its driver still wakes for every reply from the server.
            run.not_running = sampler.not_running(max(5.0, 2 * workload.wait_seconds + 2))
            if results is None:
                results = {p: d for p, d in read_records(run_dir, "result").items()
                           if p in pids}
                run.error = _failure(proc, log_path, "the probe did not finish in every worker",
                                     workload.probe_timeout_s(), pids, results)
            run.results = [results[p] for p in sorted(results)]
            spec = _load_spec(workload, ready)
            if spec is not None and run.error is None and run.results and \
                    not any(r.error for r in run.results):
                loading = time.monotonic()
                run.requests = _drive_requests(run_dir, spec, workload, proc)
                run.timings["requests"] = time.monotonic() - loading
            if routes and run.error is None and run.results and \
                    not any(r.error for r in run.results):
                before_routes = _timed_out_pids(log_path)
                routing = time.monotonic()
                run.routes = _drive_routes(run_dir, routes, workload, proc, pids, ready, dsn,
                                           log_path)
                run.routes.timeout_s = run.timeout_s
                run.timings["routes"] = time.monotonic() - routing
            _quick_stop(proc, run_dir, harness=argv is None)
    finally:
        run.log_tail = _log_tail(log_path)
        run.timed_out_pids = (_timed_out_pids(log_path) if before_routes is None
                              else before_routes)
        if not any(run_dir == d for _, d in _exiting):
            children.remove_temp_dir(run_dir)
    return run


# gunicorns whose figures are all in and that were told to stop, still exiting, with their
# run dirs. The next build boots meanwhile, and reaps them before it measures anything
# (``finish_previous``).
_exiting: list[tuple[subprocess.Popen, str]] = []


@contextlib.contextmanager
def _owned(proc):
    """Stop and reap ``proc`` when the block fails or returns early; after ``_quick_stop``
    its reaping waits for ``finish_previous``."""
    try:
        yield proc
    except BaseException:
        children.stop(proc, signal.SIGINT, timeout=10)
        raise
    if not any(proc is p for p, _ in _exiting):
        children.stop(proc, signal.SIGINT, timeout=10)


def finish_previous() -> None:
    """Reap every gunicorn ``_quick_stop`` left exiting and remove its run dir (before the
    next build measures, and before the server stops). Its master reaps its own workers
    first: killing it, or removing the dir it works in, before that would leave them to
    init, which reaps orphans slowly here (1.1–1.5 s measured)."""
    while _exiting:
        proc, run_dir = _exiting.pop()
        if os.path.exists(os.path.join(run_dir, "stop")):
            # The harness's master leaves by itself (``_quick_stop``): a SIGINT before it
            # did would send it through gunicorn's own stop, 0.1 s sleeps and all.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        children.stop(proc, signal.SIGINT, timeout=10)
        children.remove_temp_dir(run_dir)


def _quick_stop(proc, run_dir: str, harness: bool) -> None:
    """Stop gunicorn once every figure is in: ``stop`` in the run dir and its workers killed
    at once; its reaping waits for ``finish_previous``.

    The harness's master (``harness``) leaves by itself as soon as it has reaped its last
    worker once ``stop`` is there (``harness_conf.child_exit``): measured with 4 gevent
    workers, 9 ms until it is reaped, against 0.22-0.25 s with a SIGINT to the master as
    well (its stop loop sleeps 0.1 s between looks, then Python winds down), 0.84 s for
    SIGINT alone, and 1.1-1.5 s for killing the whole group (orphaned workers wait for init
    to reap them). A user's master (``--app``) is told to quit with SIGINT. Their
    connections close with them; PostgreSQL logs nothing for an idle connection that goes
    away.
    """
    try:
        workers = psutil.Process(proc.pid).children()
        with open(os.path.join(run_dir, "stop"), "w"):  # only its existence counts
            pass
        if not harness:
            proc.send_signal(signal.SIGINT)
    except (psutil.Error, ProcessLookupError, OSError):
        return
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    _exiting.append((proc, run_dir))


def _drive_requests(run_dir: str, spec: LoadSpec, workload: Workload, proc) -> RequestFigures:
    """The request phase, after the verdict's windows: the workers keep their greenlets
    waiting on the server while we send open-loop requests at their probe route."""
    with OpenLoopLoad(spec) as load:
        with open(os.path.join(run_dir, "http-go"), "w"):
            pass
        load.start()
        end = time.monotonic() + workload.http_seconds
        while time.monotonic() < end and proc.poll() is None:
            children.check_guards()
            time.sleep(0.05)
        # A blocked hub answers late: wait for what is in flight (bounded per request).
        return load.stop(grace_s=workload.http_timeout_s, guard=children.check_guards)


def _drive_routes(run_dir: str, routes: list, workload: Workload, proc, pids: list[int],
                  ready: dict[int, Ready], dsn: str, log_path: str) -> route_phase.RoutesRun:
    """The route phase, after the request phase, in the same workers (``routes.py``)."""
    started = time.monotonic()
    out = route_phase.RoutesRun(server_port=route_phase.server_port(dsn), asked=list(routes))
    port = ready_port(ready)
    with route_phase.phase_files(run_dir):
        # Each worker hands over once its request phase is over.
        wait = workload.http_seconds + workload.http_timeout_s + 30
        got = _wait_for(run_dir, "route-ready", len(pids), wait, proc, pids)
        if got is None or port is None:
            out.error = _failure(proc, log_path, "the workers did not get ready for the routes",
                                 wait, pids, got)
            return out
        try:
            out.routes = route_phase.drive(
                routes, port=port, pids=pids, concurrency=workload.route_concurrency,
                timeout_s=workload.http_timeout_s, log_path=log_path, dsn=dsn,
                guard=children.check_guards, alive=lambda: proc.poll() is None,
                run_dir=run_dir, clock=lambda: cpu.clocks(pids))
        except route_phase.GunicornGone as gone_:
            # Its workers go with it: what they answered since says nothing about the app.
            out.routes, out.stopped = gone_.args[0], True
            out.error = _failure(proc, log_path, "the route phase was cut short", 0)
            out.seconds = round(time.monotonic() - started, 3)
            return out
    reports = _wait_for(run_dir, "routes", len(pids), 30, proc, pids)
    if reports is None:
        reports = read_records(run_dir, "routes")
        out.error = _failure(proc, log_path, "a worker did not report its route phase", 30,
                             pids, reports)
    # Workers gunicorn started meanwhile in place of killed ones watched the later routes.
    late = sorted(p for p in read_records(run_dir, "route-ready") if p not in pids)
    if late:
        reports = {**reports, **(_wait_for(run_dir, "routes", len(late), 5, proc, late)
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


def app_error(errors: dict[int, AppError], preload: bool) -> AppError | None:
    """The record that names why the app did not load, of all those written.

    A worker's record holds the app's own exception and line. A master's record is
    the app's only with --preload (then the master imports it); gunicorn's own
    ``HaltServer`` (the master giving up once a worker failed to boot) never is.
    """
    workers = [e for e in errors.values() if "worker" in e.where]
    if workers:
        return min(workers, key=lambda e: e.pid)
    masters = [e for e in errors.values() if not e.error.startswith("HaltServer")]
    if not masters:
        return None
    e = min(masters, key=lambda e: e.pid)
    if not preload:  # the master imported it from the config file or a hook, not for --preload
        e = dataclasses.replace(e, where="while the gunicorn master started")
    return e


def _raise_app_error(run_dir: str, preload: bool) -> None:
    """``run --app``: the user's app failed to load; say so in its own words (exit 2)."""
    e = app_error(read_records(run_dir, "app-error"), preload)
    if e is None:
        return
    origin = f" ({e.origin})" if e.origin else ""
    raise ProbeError(f"your app failed to load {e.where}: {redact(e.error)}{origin}: "
                     "fix it, then check that plain gunicorn starts it")


def _raise_still_importing(run_dir: str, proc, timeout: float, preload: bool) -> None:
    """``run --app``: the workers did not get ready because the app was still importing when
    the boot timeout ran out: say so, and which setting gives it more time (exit 2)."""
    if proc.poll() is not None:
        return
    ready = read_records(run_dir, "ready")
    importing = [r for r in read_records(run_dir, "importing").values()
                 if r.pid not in ready and not gone(r.pid)]
    fix = (f"if it is meant to take that long, raise boot_timeout_s (now {timeout:g} s) in a "
           "profile ([workload] boot_timeout_s = 300, --config FILE); otherwise find what the "
           "import waits for (a connection or a network call made at import time)")
    if importing:
        first = min(importing, key=lambda r: r.t)
        raise ProbeError(f"your app was still importing in gunicorn worker {first.pid} "
                         f"{time.monotonic() - first.t:.0f} s after it started, longer than "
                         f"the {timeout:g} s the workers have to get ready: {fix}")
    try:
        forked = psutil.Process(proc.pid).children()
    except psutil.Error:
        forked = []
    if preload and not forked:  # --preload: the master imports the app before any fork
        raise ProbeError(f"the gunicorn master was still loading your app (--preload) after "
                         f"{timeout:g} s, the time the workers have to get ready: {fix}")


def _failure(proc, log_path: str, what: str, timeout: float,
             pids: list[int] | None = None, reported: dict | None = None) -> str:
    log = _log_tail(log_path)
    if proc.poll() is not None:
        if proc.returncode < 0:
            # A signal from outside: its log only says what it did before, never why.
            why = _explain_exit(log, fallback=False) or (
                "nothing in its log says why; something outside sent the signal (a user, a "
                "supervisor, the out-of-memory killer: see dmesg)")
        else:
            why = _explain_exit(log)
        was = "was " if proc.returncode < 0 else ""
        return (f"{what}: the gunicorn master (pid {proc.pid}) {was}"
                f"{children.describe_exit(proc.returncode)}: {why}")
    timeouts = [line for line in log if "WORKER TIMEOUT" in line]
    if timeouts:
        return f"{what}: gunicorn killed a worker whose hub was blocked ({timeouts[-1].strip()})"
    dead = [p for p in pids or [] if p not in (reported or {}) and gone(p)]
    if dead:
        return f"{what}: worker {dead[0]} died mid-probe ({_worker_exit(log_path, dead[0])})"
    return f"{what} within {timeout:.0f} s"


_TIMEOUT_LINE = re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)")


def _timed_out_pids(log_path: str) -> list[int]:
    """Workers the master killed for a blocked hub, from the whole log."""
    try:
        with open(log_path, errors="replace") as f:
            return sorted({int(m.group(1)) for m in _TIMEOUT_LINE.finditer(f.read())})
    except OSError:
        return []


def _worker_exit(log_path: str, pid: int, wait: float = 2.0) -> str:
    """What the master logged about a dead worker; it logs once it has reaped it."""
    deadline = time.monotonic() + wait
    needle = f"pid:{pid})"
    while True:
        lines = [ln.strip() for ln in _log_tail(log_path, 200) if needle in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return f"gunicorn: {lines[-1]}" if lines else "gunicorn logged nothing about it"


def _wait_for(run_dir: str, prefix: str, count: int, timeout: float, proc,
              pids: list[int] | None = None) -> dict | None:
    """Wait until ``count`` workers wrote ``prefix-<pid>.json``; None on timeout, when the
    gunicorn master exits, or when a worker died without writing it."""
    return _wait_records(run_dir, prefix, count, timeout, lambda: proc.poll() is None, pids)
