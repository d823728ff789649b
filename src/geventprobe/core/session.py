"""What the rows of one run share: the server (and ``--rtt`` proxy), the import checks, the clock.

A ``Session`` is entered once per run (``core/runner.run``; ``versions/bisect.run`` keeps
one across its probes): pre-flight checks, then the embedded server or the user's (and
the delay proxy in front of it), then the import checks of the builds a target asks for
(``Target.imports``: the calibration controls', a version matrix's; the built-in builds'
own workers say it themselves, ``core/drivers.py``); the run's time
limit is enforced from then on. ``probe`` runs one subject against it and judges it.
Every process and temp dir is owned by a context manager, so it is stopped, reaped and
removed however the run ends. No printing: progress goes to the listener.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence

from geventprobe.core import builds
from geventprobe.core.builds import Build
from geventprobe.core.progress import Listener
from geventprobe.core.target import Subject
from geventprobe.dsn import uses_environment
from geventprobe.errors import ProbeError
from geventprobe.processes import children, delay_proxy, gunicorn_workers, preflight
from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.processes.server import ServerInfo, password_used, query_server
from geventprobe.record import BuildResult, DelayProxyFigures
from geventprobe.settings import RunPlan, Workload


class Session:
    """The server every row of a run is probed against, and what the run measured of itself."""

    def __init__(self, plan: RunPlan, listener: Listener, imports: Sequence[Build] = ()):
        self.plan = plan
        self.listener = listener
        self.dsn = ""
        """The DSN the workers use (through the delay proxy with ``--rtt``)."""
        self.server_info: ServerInfo | None = None
        self.proxy: DelayProxyFigures | None = None
        """The ``--rtt`` delay proxy's figures, once it has stopped."""
        self.timings: dict[str, float] = {}
        """Where the run's time went (``RunResult.timings``)."""
        # The calibration controls may need any build.
        self._imports = list(builds.BUILDS) if plan.calibrate else list(imports)
        self._available: dict[str, builds.Availability] | None = None
        self._checking: builds.ImportCheck | None = None
        self._started = time.monotonic()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Session:
        try:
            plan = self.plan
            preflight.check_before_start(
                plan.workload, plan.dsn, embedded=plan.dsn is None and not uses_environment(),
                allow_many_connections=plan.allow_many_connections)
            less = getattr(plan.target, "less_work", preflight.LESS_WORK)
            self._stack.enter_context(children.guarded(
                preflight.time_limit(plan.time_limit_s, less)))
            self.dsn, self.server_info = self._stack.enter_context(self._server())
            # The import checks (0.1-0.2 s of CPU each, measured) run once the server is up,
            # while the builds boot (``drivers.boot_ahead``): started with the server, they
            # slowed its start (copying its cluster took 0.64 s instead of 0.1).
            self._checking = builds.ImportCheck(self._imports)
            self._stack.callback(self._checking.close)
            # The last row's gunicorn, still exiting, is reaped before the server stops.
            self._stack.callback(gunicorn_workers.finish_previous)
            self.timings["server"] = time.monotonic() - self._started
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    def enter(self, manager):
        """Enter the context manager ``manager`` until the session ends (before the server
        stops); what it gave."""
        return self._stack.enter_context(manager)

    def at_close(self, callback, *args) -> None:
        """Call ``callback(*args)`` when the session ends, however it ends (before the server
        stops): what a subject started ahead of its turn is stopped even if it never ran."""
        self._stack.callback(callback, *args)

    def available(self) -> dict[str, builds.Availability]:
        """Which builds import here (waits for the checks started with the server)."""
        if self._available is None:
            mark = time.monotonic()
            self._available = self._checking.result() if self._checking else {}
            self.timings["imports"] = time.monotonic() - mark
        return self._available

    def probe(self, subject: Subject, *, workload: Workload | None = None,
              label: str | None = None) -> BuildResult:
        """Start ``subject``'s workers against the server, probe them and judge them.

        ``workload``: the profile's unless given (the calibration controls turn the request
        phase off); ``label``: the name its time is recorded under (``build <label>``).
        """
        workload = workload or self.plan.workload
        started = time.monotonic()
        run = subject.launch(self, workload)
        result = subject.judge(run, workload, self.plan.thresholds, started)
        if label is not None:
            self.timings[f"build {label}"] = result.duration_s
        return result

    @contextlib.contextmanager
    def _server(self) -> Iterator[tuple[str, ServerInfo]]:
        """The DSN workers use and what the server said about itself."""
        plan, listener = self.plan, self.listener
        needed = plan.workload.connections()
        if plan.dsn is not None or uses_environment():
            dsn = plan.dsn or ""
            listener.phase("connecting to PostgreSQL")
            info = query_server(dsn, embedded=False,
                                connect_timeout=plan.workload.connect_timeout_s, needed=needed)
            fitted = plan.workload.fitted(info.free_connections())
            preflight.check_budget(info, fitted.connections())
            if fitted is not plan.workload:
                self.plan = plan = dataclasses.replace(
                    plan, profile=dataclasses.replace(plan.profile, workload=fitted))
            with self._delayed(dsn, embedded=False) as worker_dsn:
                yield worker_dsn, info
            return
        listener.phase("starting the embedded PostgreSQL")
        # Room for a build's connections while the previous build's backends exit.
        with EmbeddedPostgres(max_connections=2 * needed + 10) as pg:
            info = query_server(pg.dsn, embedded=True)
            with self._delayed(pg.dsn, embedded=True) as worker_dsn:
                yield worker_dsn, info

    @contextlib.contextmanager
    def _delayed(self, dsn: str, embedded: bool) -> Iterator[str]:
        """``dsn``, or with ``rtt_ms`` the same DSN through a delay proxy started for the run.

        The server facts above were asked directly; the workers (and ``--app``'s
        ``DATABASE_URL``) get the proxy's address, with user, password and options unchanged
        (plus the password libpq found in ``~/.pgpass`` for the server's port, which the
        proxy's port would not match). One connection through the proxy is tried first, so
        that what only the proxy changes (the port, the round trips a connect costs within
        ``connect_timeout``) is said once, up front, not by every worker.
        """
        workload = self.plan.workload
        rtt_ms = workload.rtt_ms
        if rtt_ms <= 0:
            yield dsn
            return
        upstream = delay_proxy.upstream_for(dsn)
        password = None if embedded else password_used(dsn, workload.connect_timeout_s)
        self.listener.phase(f"starting the delay proxy ({rtt_ms:g} ms round trip)")
        proxy = delay_proxy.DelayProxy(upstream, rtt_ms)
        try:
            with proxy:
                worker_dsn = delay_proxy.proxied_dsn(dsn, proxy.port, password)
                _through_proxy(worker_dsn, embedded, workload, proxy.port, upstream)
                yield worker_dsn
        finally:
            self.proxy = proxy.figures


def _through_proxy(worker_dsn: str, embedded: bool, workload: Workload, port: int,
                   upstream: delay_proxy.Upstream) -> None:
    """Connect once as the workers will, through the ``--rtt`` proxy; one line if it fails."""
    try:
        query_server(worker_dsn, embedded=embedded, connect_timeout=workload.connect_timeout_s)
    except ProbeError as exc:
        children.check_guards()  # the proxy itself died: say that, not what it broke
        detail = str(exc).split(": ", 1)[-1]
        text = str(exc.__cause__ or "").lower()
        if "timeout expired" in text:
            rtt = workload.rtt_ms
            detail = (f"no answer within {workload.connect_timeout_s} s (connect_timeout): a "
                      "connection through the proxy takes 2 to 4 round trips (SSL request, "
                      f"startup, password exchange), {2 * rtt / 1000:.1f} to "
                      f"{4 * rtt / 1000:.1f} s at --rtt {rtt:g}: raise connect_timeout in the "
                      "DSN (or PGCONNECT_TIMEOUT) above that, or lower --rtt")
        raise ProbeError(f"cannot connect through the --rtt delay proxy (127.0.0.1:{port}, "
                         f"in front of {upstream.describe()}): {detail}") from None


def require(available: dict[str, builds.Availability], wanted: Sequence[Build]) -> None:
    """Refuse a build the user named that does not import here (reason and install command)."""
    missing = [b for b in wanted if not available[b.name].ok]
    if missing:
        a = available[missing[0].name]
        raise ProbeError(f"build {a.build} is not available ({a.reason}): {a.install}")

