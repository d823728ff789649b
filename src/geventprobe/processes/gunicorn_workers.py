"""gunicorn's side of a run of probed WSGI workers: starting it, reading it, stopping it.

Starts ``gunicorn -k gevent -w N`` on a free loopback port (the harness app and config,
or the user's own through ``worker/app_conf.py``) with the probe in every worker, and
answers what the run's driver (``app/wsgi_run.py``, the same for every WSGI server) asks
of it: whether the master still runs, the workers' records in the run dir, why it failed
in gunicorn's words (its log, its WORKER TIMEOUT kills, the app's own error), and how to
stop it quickly. Nothing here knows the user's routes: this layer starts and reaps
processes. Nothing is parsed out of stdout; the log is only read to explain a failure.
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
from typing import ClassVar

import psutil

from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.run_dir import (
    gone,
    log_tail,
    read_records,
    slow_import_fix,
    still_importing,
)
from geventprobe.processes.run_dir import wait_for as _wait_records
from geventprobe.settings import Thresholds, Workload
from geventprobe.worker.record import AppError

HARNESS_CONFIG = "python:geventprobe.worker.harness_conf"
HARNESS_APP = "geventprobe.worker.harness_app:application"


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
    """A gunicorn started for one run of the probe (``boot``), maybe ahead of its turn: the
    WSGI server ``app/wsgi_run.run_workers`` drives (``WsgiServer``)."""

    name: ClassVar[str] = "gunicorn"
    proc: subprocess.Popen
    run_dir: str
    log_path: str
    timeout: float
    """gunicorn's ``--timeout`` (the worker timeout) that applies."""
    started: float
    """When it was started (``time.monotonic``)."""
    preload: bool = False
    """``--preload``: the master imports the app (its errors are the app's)."""
    users_app: bool = False
    """The user's app and gunicorn config (``run --app``), not the built-in harness."""
    done: bool = False
    """``run_workers`` took it over (or ``discard`` stopped it)."""

    def running(self) -> bool:
        """The master still runs."""
        return self.proc.poll() is None

    def wait_for(self, prefix: str, count: int, timeout: float,
                 pids: list[int] | None = None) -> dict | None:
        """``_wait_for`` in this run dir."""
        return _wait_for(self.run_dir, prefix, count, timeout, self.proc, pids)

    def failure(self, what: str, timeout: float, pids: list[int] | None = None,
                reported: dict | None = None) -> str:
        """Why ``what`` did not happen, in gunicorn's words (``_failure``)."""
        return _failure(self.proc, self.log_path, what, timeout, pids, reported)

    def refuse_boot(self, boot_timeout: float) -> None:
        """No worker got ready: raise the user's app's own error, or that it was still
        importing, when either is why (the user's app only); return otherwise."""
        _raise_app_error(self.run_dir, self.preload)
        if self.users_app:  # the user's app, imported the way they deploy it
            _raise_still_importing(self.run_dir, self.proc, boot_timeout, self.preload)

    def timed_out_pids(self) -> list[int]:
        """Workers the master killed for a blocked hub (WORKER TIMEOUT), from its whole log."""
        return _timed_out_pids(self.log_path)

    def timed_out_in(self, lines: list[str]) -> list[int]:
        """The same, from these lines of its log."""
        return sorted({int(m.group(1)) for line in lines for m in _TIMEOUT_LINE.finditer(line)})

    def log_tail(self) -> list[str]:
        return log_tail(self.log_path)

    @contextlib.contextmanager
    def owned(self):
        """Stop and reap gunicorn when the block fails or returns early (``_owned``)."""
        with _owned(self.proc):
            yield

    def discard(self) -> None:
        """Stop a gunicorn ``boot`` started that ``run_workers`` never took over (the run
        ended before its turn, or its build does not import), and remove its run dir."""
        if self.done:
            return
        self.done = True
        _stop_now(self.proc)
        children.remove_temp_dir(self.run_dir)

    def quick_stop(self) -> None:
        """Every figure is in: ``_quick_stop``."""
        _quick_stop(self.proc, self.run_dir, harness=not self.users_app)

    def finish_previous(self) -> None:
        """The previous run's gunicorn is reaped (``finish_previous``)."""
        finish_previous()

    def release(self) -> None:
        """Remove the run dir, unless the exiting gunicorn still works in it."""
        if not any(self.run_dir == d for _, d in _exiting):
            children.remove_temp_dir(self.run_dir)


def boot(build_env: dict[str, str], workload: Workload, dsn: str, preload: bool, *,
         python: str | None = None, base_env: dict[str, str] | None = None,
         argv: list[str] | None = None, cwd: str | None = None, keep_cmd_args: bool = False,
         thresholds: Thresholds | None = None, routes_timeout_s: float | None = None,
         timeout_s: float | None = None, go_wait_s: float = 0.0) -> Boot:
    """Start gunicorn with the probe in every worker; its workers boot and wait for go.

    ``build_env`` goes on top of our environment, or of ``base_env`` with ``python`` (a
    version matrix's isolated interpreter, whose ``PYTHONPATH`` holds only the worker
    shim). ``argv``, ``cwd`` and ``keep_cmd_args`` run the user's own app and gunicorn
    config instead of the harness app (``run --app``: ``app/gunicorn_app.py`` builds the
    command line, and ``GUNICORN_CMD_ARGS`` applies as in their deployment). ``thresholds``
    go to the workers so they stop repeating a measurement whose verdict is already
    decided. ``routes_timeout_s``: the workers stay for the route phase, this long at most
    (None: no routes). ``timeout_s``: gunicorn's worker timeout when ``argv`` sets its own
    (the user's config: the evidence of a WORKER TIMEOUT quotes the timeout that applied).

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
        if routes_timeout_s:  # the workers stay for the route phase, this long at most
            env["GEVENTPROBE_ROUTES_TIMEOUT_S"] = str(routes_timeout_s)
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
                timeout=timeout if argv is None or timeout_s is None else timeout_s,
                preload=preload, users_app=argv is not None)


def _stop_now(proc) -> None:
    """Stop a gunicorn whose figures are not all in (the run failed, was interrupted, or
    ended before its turn): its master told to quit, its workers killed at once, then reaped.

    A worker still in the probe (waiting for go, or measuring) does not act on its master's
    quit signal, so the master waited for its graceful timeout (30 s by default in a
    user's config, 3 s in ours) and was killed after our 10 s: measured, Ctrl-C during a
    ``--app`` run's boot took 11.5 s to come back, a default run's 3.4 s. The workers are
    ours, started for the probe; their connections close with them.
    """
    try:
        workers = psutil.Process(proc.pid).children()
        proc.send_signal(signal.SIGINT)
    except (psutil.Error, ProcessLookupError, OSError):
        workers = []
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    children.stop(proc, signal.SIGINT, timeout=10)


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
        _stop_now(proc)
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
    to reap them). A user's master (``--app``) is told to quit with SIGINT once it has
    reaped them (10-12 ms; ``app_conf.child_exit`` starts none in their place), and quits
    through gunicorn's own stop, their ``on_exit`` included: 66 ms, against 265 ms when the
    SIGINT came with the kills (its stop loop slept 0.1 s on workers not yet reaped). Their
    connections close with them; PostgreSQL logs nothing for an idle connection that goes
    away.
    """
    try:
        workers = psutil.Process(proc.pid).children()
        with open(os.path.join(run_dir, "stop"), "w"):  # only its existence counts
            pass
    except (psutil.Error, ProcessLookupError, OSError):
        return
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    if not harness:
        # Once it has reaped them (no replacement: ``app_conf.child_exit``), so that its stop
        # loop finds none left to wait for.
        _reaped(proc, workers, timeout=1.0)
        with contextlib.suppress(ProcessLookupError, OSError):
            proc.send_signal(signal.SIGINT)
    _exiting.append((proc, run_dir))


def _reaped(master, workers: list[psutil.Process], timeout: float) -> None:
    """Wait until ``master`` has reaped ``workers`` (or exited), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and master.poll() is None:
        if not any(_unreaped(w) for w in workers):
            return
        time.sleep(0.002)


def _unreaped(worker: psutil.Process) -> bool:
    try:
        return worker.is_running()  # a zombie still is: its parent has not reaped it
    except psutil.Error:
        return False


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
    fix = slow_import_fix(timeout)
    first = still_importing(run_dir)
    if first is not None:
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
    log = log_tail(log_path)
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
        lines = [ln.strip() for ln in log_tail(log_path, 200) if needle in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return f"gunicorn: {lines[-1]}" if lines else "gunicorn logged nothing about it"


def _wait_for(run_dir: str, prefix: str, count: int, timeout: float, proc,
              pids: list[int] | None = None) -> dict | None:
    """Wait until ``count`` workers wrote ``prefix-<pid>.json``; None on timeout, when the
    gunicorn master exits, or when a worker died without writing it."""
    return _wait_records(run_dir, prefix, count, timeout, lambda: proc.poll() is None, pids)
