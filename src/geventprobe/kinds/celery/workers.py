"""Run the probe inside the user's real celery -P gevent worker: the sibling of gunicorn_workers.

``run_celery`` starts the worker the way the user does (``app_command``: ``celery -A APP
worker -P gevent -c N``; ``user_command``: their own command line, e.g. ``python
worker.py``), with their environment plus ours, all through the environment (the broker
URL and the DSN may hold passwords: never on a command line):

- ``PYTHONPATH`` gets a boot dir first: ``sitecustomize.py`` (``worker/celery_sitecustomize.py``)
  and a copy of ``geventprobe/worker``. Python imports it while it starts, whatever the
  command; it installs ``worker/celery_watch.py`` (who imported the driver, when, and
  whether gevent had patched then) and, once celery is imported, ``worker/celery_probe.py``
  (celery's signals; a queue of our own; heartbeat, connect phase, one file per task);
- ``CELERY_BROKER_URL`` and its read and write variants point the worker at the run's
  broker (celery reads them before the app's own settings; the worker puts them back at
  ``worker_init`` if its own ``-b`` changed them), ``DATABASE_URL`` at the probed server
  unless the user set it. Our own side publishes on a kombu connection to the run's
  broker alone (``_Sender``): a celery app here would take the user's broker from the
  same environment.

Then, reading only the files the worker writes (``worker/record.py``'s celery records,
version-checked), never its stdout: wait until it is ready (a worker of another pool, a
command that never imported celery, an app still importing: one line) and has
connected; send a
warm-up task, one probe task alone, then C at once (``geventprobe.pg_sleep(w)``), then
each of the user's tasks alone and C at once, each through the broker to our queue; for
every task record when we sent it, when the consumer took it, when it started and
finished, and celery's own runtime. A worker that never gets ready, never starts a task,
never finishes one, or whose hub stays held, is a ``Stall`` within a deadline, with its
stacks, not a hang. Once every figure is in, the worker is killed at once (its figures
are in, nothing of ours is in flight: celery's warm shutdown took 2.7-4.9 s); a stalled
worker first gets SIGTERM, then SIGKILL if it ignores it. Everything it started is
reaped, our queue deleted, the run dir removed.

The verdict rules (``kinds/celery/task_rules.py``) read the figures this returns (``CeleryRun``);
which figures separate OK / BLOCKING / SERIALIZED / never-ran, with the margins
measured: docs/celery.md.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from geventprobe.errors import ProbeError
from geventprobe.processes import broker as brokers
from geventprobe.processes import children
from geventprobe.processes.cpu import CpuSampler
from geventprobe.worker import celery_probe, record
from geventprobe.worker.record import (
    CeleryConnected,
    CeleryFacts,
    CeleryHub,
    CeleryReady,
    Running,
)

LOG_NAME = "worker.log"


# --- what to start -----------------------------------------------------------------------

@dataclass(frozen=True)
class CeleryCommand:
    """How the worker is started: the argv (no secrets on it), where, and how we got it."""

    argv: tuple[str, ...]
    cwd: str
    how: str
    """``app`` (``--celery APP``: we built the celery command) or ``command`` (theirs)."""

    @property
    def shown(self) -> str:
        return shlex.join(self.argv)


def app_command(app: str, concurrency: int, cwd: str = ".", *, python: str | None = None,
                loglevel: str = "info") -> CeleryCommand:
    """``celery -A APP worker -P gevent -c N``, as the ``celery`` program runs it
    (``python -m celery`` is the same entry point: it patches gevent before it imports APP).

    ``--without-mingle --without-gossip``: a worker of ours must not sync with, or listen
    to, the user's other workers on their broker (``--broker``); and mingle waits 1 s for
    neighbours at every start (measured). Neither changes the pool, the app or the import
    order. ``--celery-cmd`` runs the user's command as it is.
    """
    if not app.strip() or app.startswith("-"):
        raise ProbeError(f"--celery {app!r}: give the app as celery's -A takes it "
                         "(e.g. proj or proj.celery:app)")
    argv = (python or sys.executable, "-m", "celery", "-A", app, "worker", "-P", "gevent",
            "-c", str(int(concurrency)), "-l", loglevel, "--without-mingle", "--without-gossip")
    return CeleryCommand(argv=argv, cwd=os.path.abspath(cwd), how="app")


def user_command(command: str, cwd: str = ".") -> CeleryCommand:
    """The user's own start command, split as a shell would (no shell runs it: for pipes or
    ``&&`` give ``sh -c '...'``)."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ProbeError(f"--celery-cmd {command!r} does not parse ({exc}): quote it as you "
                         "would in a shell") from None
    if not argv:
        raise ProbeError("--celery-cmd is empty: give the command that starts your worker, "
                         "e.g. --celery-cmd \"python worker.py\"")
    _refuse_daemon_flags(argv)
    return CeleryCommand(argv=argv, cwd=os.path.abspath(cwd), how="command")


#: celery's own flags that put the worker in the background or write files of the user's:
#: the flag, and why geventprobe cannot run the worker with it.
DAEMON_FLAGS = {
    "--detach": "forks the worker into the background and lets the command exit, so "
                "geventprobe could neither watch nor stop it",
    "--pidfile": "writes a pid file of yours (and refuses to start while one is there)",
    "--logfile": "sends the worker's log into a file of yours instead of to geventprobe, which "
                 "reads it to say why a worker stopped",
}
#: Their short forms, read only in a celery command (``python worker.py -f x`` is the
#: script's business).
_SHORT = {"-D": "--detach", "-f": "--logfile"}


def _words(argv: Sequence[str]) -> list[str]:
    """The command's words, and those of a quoted script inside it (``sh -c '...'``)."""
    out = []
    for word in argv:
        out.append(word)
        if " " in word.strip():
            with contextlib.suppress(ValueError):
                out.extend(shlex.split(word))
    return out


def _refuse_daemon_flags(argv: Sequence[str]) -> None:
    """One line for a command that detaches the worker or writes the user's files."""
    words = _words(argv)
    celery = any(os.path.basename(w) == "celery" for w in words)
    if celery and "multi" in words:
        raise ProbeError("--celery-cmd: `celery multi` starts workers in the background, where "
                         "geventprobe can neither watch nor stop them: give the command of one "
                         "worker in the foreground, e.g. --celery-cmd \"celery -A proj worker "
                         "-P gevent -c 100\"")
    for word in words:
        flag, eq, value = word.partition("=")
        if eq and not value:
            continue  # `--pidfile=`: the documented way to write no pid file at all
        flag = _SHORT.get(flag, flag) if celery else flag
        if flag in DAEMON_FLAGS:
            raise ProbeError(f"--celery-cmd: {flag} {DAEMON_FLAGS[flag]}: drop {flag} (and "
                             "--detach, --pidfile, --logfile): geventprobe runs the worker in "
                             "the foreground and stops it itself")


def _spawn(command: CeleryCommand, env: dict[str, str], log_path: str):
    """Start the worker's command; one line when its program cannot be run (a typo, a
    program not installed in this environment, a script without its x bit)."""
    try:
        return children.spawn(command.argv, cwd=command.cwd, log_path=log_path, env=env)
    except FileNotFoundError:
        where = ("on PATH" if os.sep not in command.argv[0] else f"(looked in {command.cwd})")
        raise ProbeError(f"--celery-cmd: {command.argv[0]} was not found {where}: install it "
                         "in this environment, or give its full path (e.g. .venv/bin/celery)"
                         ) from None
    except PermissionError:
        raise ProbeError(f"--celery-cmd: {command.argv[0]} is not executable (in "
                         f"{command.cwd}): give the program that starts your worker, or "
                         "chmod +x it") from None


@dataclass(frozen=True)
class UserTask:
    """One of the user's tasks (``--task NAME`` with ``--task-args`` / ``--task-kwargs``)."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Deadlines:
    """How long each step may take before it is a finding (or an error), s."""

    boot: float = 60.0
    """From the start until ``worker_ready`` (the profile's ``boot_timeout_s``)."""
    connect: float = 10.0
    """From ready until the connect phase is done (a hub that never runs: see ``hub_silent``)."""
    hub_silent: float = 1.0
    """Ready this long and the probe's greenlet never ran (no hub file): the hub is held;
    stop waiting for the connect phase (a healthy worker writes it within ~50 ms)."""
    start: float = 5.0
    """A batch none of whose tasks started this long after it was sent, or whose worker's
    heartbeat has not ticked for this long while tasks are unfinished, has stalled (healthy:
    the warm-up starts 0.02-0.04 s after it is sent; the profile's
    ``task_start_timeout_s``)."""
    per_task: float = 0.5
    """Added to a probe batch's deadline per task in it, beyond 3 × C × w + ``start``."""
    user_task: float = 60.0
    """One of the user's own tasks, until it is done (their work may take long; the
    profile's ``task_timeout_s``)."""
    stop_stalled: float = 1.0
    """SIGTERM until SIGKILL for a worker found stalled (measured: a worker whose hub is
    held ignores SIGTERM altogether: waiting longer tells nothing new)."""


# --- what comes back ---------------------------------------------------------------------

@dataclass(frozen=True)
class TaskFigures:
    """One task, from when we sent it to when it finished. Times are ``time.monotonic()``."""

    task_id: str
    name: str
    sent: float
    received: float | None
    """celery's ``task_received``: the consumer took it off the broker (None: never)."""
    started: float | None
    """``task_prerun``: its greenlet began (None: never)."""
    finished: float | None
    state: str | None
    error: str | None
    celery_runtime: float | None
    """celery's own runtime figure (what its events and Flower show)."""
    error_origin: str | None = None
    """The user's frame that raised ``error``."""
    probe_connect: tuple[float, float] | None = None
    """A probe task's connection: its start and end (None for the user's tasks)."""
    probe_query: tuple[float, float] | None = None
    """A probe task's ``pg_sleep``: its start and end."""
    probe_running: Running | None = None
    """A probe task's: what ran on the worker's hub while its ``pg_sleep`` waited."""

    @property
    def queue_s(self) -> float | None:
        """Sent until started: the time it waited (broker, consumer and pool)."""
        return None if self.started is None else self.started - self.sent

    @property
    def run_s(self) -> float | None:
        """Started until finished, as we see it."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    @property
    def failed(self) -> bool:
        """It finished in another state than SUCCESS (an exception, a retry...)."""
        return self.finished is not None and self.state != "SUCCESS"


@dataclass(frozen=True)
class Batch:
    """Tasks sent at once (one alone, or C) and what became of them."""

    label: str
    """``warm-up``, ``alone``, ``at once``."""
    task: str
    size: int
    wait_s: float | None
    """The probe task's ``pg_sleep`` (None for the user's tasks)."""
    tasks: tuple[TaskFigures, ...]
    start: float
    """When the first task was sent."""
    end: float
    """When the last one finished, or when we stopped waiting."""
    deadline_s: float
    hub_lag_s: float | None
    """The latest heartbeat tick due inside [start, end] (None: no hub record)."""
    cpu_s: float | None = None
    """The worker's CPU seconds during [start, end] (psutil; None when not sampled)."""
    run_delay_s: float | None = None
    """Time it waited for a CPU while runnable, during [start, end] (/proc/<pid>/schedstat)."""
    sleeps: float | None = None
    """Voluntary context switches during [start, end]: how often it went to sleep."""
    wait_cpu_s: float | None = None
    """The worker's CPU seconds during ``common_wait`` (None: no such window)."""
    wait_run_delay_s: float | None = None
    """Its run-queue wait during ``common_wait``."""
    wait_sleeps: float | None = None
    """Its voluntary context switches during ``common_wait``."""
    connections: int | None = None
    """Most TCP connections the worker held to the server during the batch (None: not
    counted: a unix socket, or a probe batch)."""
    p90_busy_s: float | None = None
    """While the task at the run times' p90 ran: the worker's main thread running or waiting
    for a core (``/proc/<pid>/schedstat``), the part of that run time sharing the CPU
    explains (``task_rules``; None when not sampled)."""

    @property
    def common_wait(self) -> tuple[float, float] | None:
        """When every probe task of the batch was inside its ``pg_sleep`` at once: from the
        last one's start to the first one's end (None when they never all waited together,
        as in a blocked worker, where they wait one after the other)."""
        windows = [t.probe_query for t in self.tasks if t.probe_query is not None]
        if len(windows) != self.size or not windows:
            return None
        start, end = max(w[0] for w in windows), min(w[1] for w in windows)
        return (start, end) if end > start else None

    @property
    def wait_cpu_per_s(self) -> float | None:
        """``wait_cpu_s`` per wall second of ``common_wait``: the BUSY-WAIT figure."""
        window = self.common_wait
        if window is None or self.wait_cpu_s is None:
            return None
        return self.wait_cpu_s / (window[1] - window[0])

    @property
    def wait_runnable(self) -> float | None:
        """Share of ``common_wait`` the worker was on a CPU or queued for one."""
        window = self.common_wait
        if window is None or self.wait_cpu_s is None or self.wait_run_delay_s is None:
            return None
        return min(1.0, (self.wait_cpu_s + self.wait_run_delay_s) / (window[1] - window[0]))

    @property
    def wait_sleeps_per_s(self) -> float | None:
        """Times per second the worker went to sleep during ``common_wait``."""
        window = self.common_wait
        if window is None or self.wait_sleeps is None:
            return None
        return self.wait_sleeps / (window[1] - window[0])

    @property
    def cpu_per_s(self) -> float | None:
        """CPU seconds per wall second of the worker during the whole batch."""
        return None if self.cpu_s is None or self.wall_s <= 0 else self.cpu_s / self.wall_s

    @property
    def done(self) -> int:
        return sum(1 for t in self.tasks if t.finished is not None)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.tasks if t.failed)

    @property
    def complete(self) -> bool:
        return self.done == self.size

    @property
    def wall_s(self) -> float:
        return self.end - self.start

    def _values(self, what: str) -> list[float]:
        return sorted(v for v in (getattr(t, what) for t in self.tasks) if v is not None)

    @property
    def queue_max_s(self) -> float | None:
        values = self._values("queue_s")
        return values[-1] if values else None

    @property
    def queue_median_s(self) -> float | None:
        values = self._values("queue_s")
        return statistics.median(values) if values else None

    @property
    def run_max_s(self) -> float | None:
        values = self._values("run_s")
        return values[-1] if values else None

    @property
    def run_median_s(self) -> float | None:
        values = self._values("run_s")
        return statistics.median(values) if values else None

    @property
    def run_p90_s(self) -> float | None:
        """The 90th percentile of the run times (nearest rank)."""
        task = self.p90_task
        return task.run_s if task is not None else None

    @property
    def p90_task(self) -> TaskFigures | None:
        """The task whose run time is the batch's p90 (nearest rank)."""
        ran = sorted((t for t in self.tasks if t.run_s is not None), key=lambda t: t.run_s)
        if not ran:
            return None
        return ran[min(len(ran) - 1, max(0, -(-9 * len(ran) // 10) - 1))]

    @property
    def celery_runtime_max_s(self) -> float | None:
        values = self._values("celery_runtime")
        return values[-1] if values else None

    @property
    def peak(self) -> int:
        """The most tasks running at the same moment (between prerun and postrun)."""
        edges = []
        for t in self.tasks:
            if t.started is not None:
                edges.append((t.started, 1))
                edges.append((t.finished if t.finished is not None else self.end, -1))
        running = best = 0
        for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
            running += step
            best = max(best, running)
        return best

    @property
    def overlap(self) -> float | None:
        """Sum of the run times over the span they cover: about C when they ran side by side,
        1 when one after the other."""
        runs = [t for t in self.tasks if t.run_s is not None]
        if not runs:
            return None
        span = max(t.finished for t in runs) - min(t.started for t in runs)
        return sum(t.run_s for t in runs) / span if span > 0 else None

    @property
    def first_error(self) -> TaskFigures | None:
        """The first task (by finish) that failed."""
        failed = sorted((t for t in self.tasks if t.failed), key=lambda t: t.finished)
        return failed[0] if failed else None


@dataclass(frozen=True)
class Stall:
    """The worker did not get somewhere in time: a finding, not a hang of ours."""

    kind: str
    """``never-ready`` (no ``worker_ready``), ``never-started`` (tasks sent, none began) or
    ``stalled`` (tasks began and did not finish)."""
    batch: str | None
    """Which batch (None for ``never-ready``)."""
    task: str | None
    waited_s: float
    received: int
    started: int
    finished: int
    sent: int
    hub_silent_s: float | None
    """How long the heartbeat had not ticked when we gave up (None: it never ran at all)."""
    stacks: str
    """faulthandler's dump of every thread (works while the hub is held in C)."""
    greenlets: str | None
    """gevent's run info, every greenlet's stack (only a hub that still runs can write it)."""
    why: str = "deadline"
    """What ended the wait: ``deadline``, ``none started`` (``Deadlines.start``), ``hub
    held`` (the heartbeat silent for ``Deadlines.start``), ``exited``."""

    @property
    def main_stack(self) -> list[tuple[str, int, str]]:
        """The main thread's frames (the hub's, under gevent), outermost first."""
        return main_thread_frames(self.stacks)


@dataclass(frozen=True)
class StopFigures:
    """How the worker ended."""

    signal: str
    """``SIGKILL`` (the quick stop, or a stalled worker that ignored SIGTERM), ``SIGTERM``
    when that sufficed, ``none`` when it had exited on its own."""
    seconds: float
    returncode: int | None
    exited_before: bool = False
    """It had exited on its own before we stopped it."""
    ignored_sigterm: bool = False
    """A stalled worker was sent SIGTERM and did not exit within ``Deadlines.stop_stalled``."""


@dataclass(frozen=True)
class CeleryRun:
    """Everything one run of a celery worker produced."""

    command: CeleryCommand
    queue: str
    broker: str
    """The broker URL as shown (password masked)."""
    size: int = 0
    """Tasks sent at once in an ``at once`` batch."""
    ready: CeleryReady | None = None
    connected: CeleryConnected | None = None
    hub: CeleryHub | None = None
    """The worker's last heartbeat record."""
    facts_after: CeleryFacts | None = None
    """The facts again once the tasks ran (a lazily imported driver is in them by now)."""
    batches: tuple[Batch, ...] = ()
    stall: Stall | None = None
    stop: StopFigures | None = None
    boot_pids: tuple[int, ...] = ()
    """Processes that loaded our boot dir."""
    boot_errors: tuple[str, ...] = ()
    """Our hooks' own failures in the worker (it ran on without them)."""
    queue_cleanup: str | None = None
    """None when our queue was removed from the broker, else why it could not be."""
    log_tail: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)
    """Seconds per step seen from here: ``boot``, ``connect``, ``tasks``, ``stop``."""
    not_running: dict = field(default_factory=dict)
    """pid → what was seen, for a worker found stopped (process state T) while its tasks
    ran (``CpuSampler.not_running``)."""

    def batch(self, label: str, task: str = celery_probe.PROBE_TASK) -> Batch | None:
        """The batch with that label (and task), if it ran."""
        return next((b for b in self.batches if b.label == label and b.task == task), None)

    @property
    def facts(self) -> dict:
        """The worker's facts at the end (ready's when it never answered again)."""
        if self.facts_after is not None:
            return self.facts_after.facts
        return self.ready.facts if self.ready is not None else {}


_THREAD = re.compile(r"^(Current thread|Thread) (0x[0-9a-f]+)", re.I)
_FRAME = re.compile(r'^\s+File "(.+)", line (\d+) in (.+)$')


def main_thread_frames(stacks: str) -> list[tuple[str, int, str]]:
    """The main thread's frames in a faulthandler dump, (file, line, function), outermost
    first (faulthandler lists the most recent call first, and the threads newest first:
    the main thread, started first, is the last)."""
    threads: list[list[tuple[str, int, str]]] = []
    for line in stacks.splitlines():
        if _THREAD.match(line):
            threads.append([])
            continue
        frame = _FRAME.match(line)
        if frame and threads:
            threads[-1].append((frame.group(1), int(frame.group(2)), frame.group(3)))
    return list(reversed(threads[-1])) if threads else []


# --- the boot dir ------------------------------------------------------------------------

def make_boot_dir(run_dir: str) -> str:
    """``run_dir/boot``: ``sitecustomize.py`` and a copy of ``geventprobe/worker`` (with the
    package's empty ``__init__``): what the worker's PYTHONPATH gets, and nothing else of
    geventprobe's environment (its site-packages would shadow the user's)."""
    boot = Path(run_dir) / "boot"
    package = boot / "geventprobe"
    (package / "worker").mkdir(parents=True)
    package_files = resources.files("geventprobe")
    (package / "__init__.py").write_bytes(package_files.joinpath("__init__.py").read_bytes())
    for item in resources.files("geventprobe.worker").iterdir():
        if item.name.endswith(".py"):
            (package / "worker" / item.name).write_bytes(item.read_bytes())
    source = resources.files("geventprobe.worker").joinpath("celery_sitecustomize.py")
    (boot / "sitecustomize.py").write_bytes(source.read_bytes())
    return str(boot)


#: The environment variables celery takes its broker from, before the app's settings.
BROKER_ENV = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")


def worker_environ(base: dict[str, str], *, run_dir: str, boot: str, queue: str,
                   broker_url: str, dsn: str, workload: dict,
                   result_backend: str | None = None) -> dict[str, str]:
    """The worker's environment: theirs, plus ours (never a secret on a command line)."""
    from geventprobe.dsn import database_url

    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (boot, base.get("PYTHONPATH")) if p)
    # celery reads these before the app's own settings (the read and write URLs before
    # broker_url too): with all three the worker consumes from, and publishes to, the run's
    # broker whatever the app's config says.
    settings = {name: broker_url for name in BROKER_ENV}
    if result_backend:
        settings["CELERY_RESULT_BACKEND"] = result_backend
    env.update({
        celery_probe.RUN_DIR_ENV: run_dir,
        celery_probe.QUEUE_ENV: queue,
        celery_probe.WORKLOAD_ENV: json.dumps(workload),
        # The worker puts them back at worker_init if its command line changed them
        # (celery -b URL / --result-backend URL set the same variables).
        celery_probe.SETTINGS_ENV: json.dumps(settings),
        "GEVENTPROBE_DSN": dsn,
        "PYTHONUNBUFFERED": "1",
        **settings,
    })
    env.update(database_url(dsn, base))
    return env


# --- reading the worker's files ----------------------------------------------------------

class _Files:
    """The run dir's records, each parsed once (a file is renamed in whole and never changes,
    except ``hub-*``, which is rewritten: read fresh). A record of another version, or of
    the wrong shape, is a ProbeError (one line): the worker ran another geventprobe."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._cache: dict[str, object] = {}

    def _read(self, kind: type, path: str):
        try:
            return record.read(kind, path)
        except (OSError, ValueError):
            return None  # not there yet, or someone else's file (a rename is atomic)
        except record.RecordError as exc:
            raise ProbeError(f"cannot read the celery worker's report: {exc}") from None

    def records(self, prefix: str) -> dict[str, object]:
        """Every ``<prefix>-<key>.json`` (``record.CELERY_PREFIXES`` names its type), by key."""
        kind = record.CELERY_PREFIXES[prefix]
        found = {}
        for path in glob.glob(os.path.join(self.run_dir, f"{prefix}-*.json")):
            key = os.path.basename(path)[len(prefix) + 1:-len(".json")]
            if path not in self._cache:
                rec = self._read(kind, path)
                if rec is None:
                    continue
                self._cache[path] = rec
            found[key] = self._cache[path]
        return found

    def hub(self, pid: int) -> CeleryHub | None:
        return self._read(CeleryHub, os.path.join(self.run_dir, f"hub-{pid}.json"))

    def text(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.run_dir, name), errors="replace") as f:
                return f.read()
        except OSError:
            return None


def _log_tail(path: str, lines: int = 30) -> tuple[str, ...]:
    from geventprobe.dsn import redact

    try:
        with open(path, errors="replace") as f:
            return tuple(redact(ln.rstrip()) for ln in f.readlines()[-lines:])
    except OSError:
        return ()


_LOG_FRAME = re.compile(r'^\s*File "(.+)", line (\d+)')


def telling_line(log: Sequence[str]) -> str:
    """The lines of a worker's log that best say why it ended early, as one line.

    An exception's own last line when there is a traceback, with the innermost line of the
    user's own code in it (a SyntaxError's file and line, as gunicorn mode names them); else
    the last line naming an error, with the lines that continue it up to the next blank one
    (celery prints ``Error:`` alone, then ``Unable to load celery application.`` and the
    reason).
    """
    from geventprobe.worker.monitor import is_user_code

    lines = [ln.rstrip() for ln in log]
    if any(ln.startswith("Traceback") for ln in lines):
        for i in range(len(lines) - 1, -1, -1):
            if re.match(r"^[\w.]+(Error|Exception|Exit)\b", lines[i].strip()):
                frames = [m for m in (_LOG_FRAME.match(ln) for ln in lines[:i]) if m]
                mine = [m for m in frames if is_user_code(m.group(1))]
                where = f" ({mine[-1].group(1)}, line {mine[-1].group(2)})" if mine else ""
                return lines[i].strip() + where
    for needle in ("Error", "error", "Exception", "Unable", "No module", "not found"):
        for i in range(len(lines) - 1, -1, -1):
            if needle in lines[i]:
                parts = [lines[i].strip()]
                for follow in lines[i + 1:i + 4]:
                    if not follow.strip():
                        break
                    parts.append(follow.strip())
                return " ".join(p for p in parts if p)
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1] if rest else "no output"


# --- the run -----------------------------------------------------------------------------

def run_celery(command: CeleryCommand, *, dsn: str, broker: brokers.Broker,
               wait_s: float = 0.2, greenlets: int | None = None,
               tasks: Sequence[UserTask] = (), env: dict[str, str] | None = None,
               result_backend: str | None = None, deadlines: Deadlines = Deadlines(),
               workload: dict | None = None, server_port: int | None = None) -> CeleryRun:
    """Start the worker, probe it, stop it; everything it started is gone when this returns.

    ``greenlets``: at most how many tasks go at once (default: ``workload``'s greenlets, 16
    unless given); never more than the worker's own concurrency (its ``-c`` or settings),
    and the worker's connect phase opens as many. ``tasks``: the user's own tasks, each run
    alone then C at once after the probe task. ``env``: the worker's base environment
    (default ours). ``result_backend``: the worker's ``CELERY_RESULT_BACKEND`` (the runner
    passes the embedded broker's URL so results of the user's tasks stay in the run).
    ``server_port``: the server's TCP port, to count the worker's connections during the
    user's batches (None: not counted).

    Raises ProbeError (one line) for what the user must fix: the worker exited before it
    was ready (the app does not import...), or a ``--task`` its app does not register.
    A worker that does not get ready, never starts a task or never finishes one is a
    ``Stall`` in the result.
    """
    run_dir = children.make_temp_dir("geventprobe-celery-")
    queue = brokers.queue_name()
    log_path = os.path.join(run_dir, LOG_NAME)
    files = _Files(run_dir)
    parts: dict = {"timings": {}}
    wl = dict(celery_probe.DEFAULT_WORKLOAD, wait_seconds=wait_s, **(workload or {}))
    if greenlets:
        wl["greenlets"] = int(greenlets)
    started = time.monotonic()
    proc = None
    try:
        boot = make_boot_dir(run_dir)
        proc = _spawn(command, worker_environ(
            dict(os.environ if env is None else env), run_dir=run_dir, boot=boot, queue=queue,
            broker_url=broker.url, dsn=dsn, workload=wl, result_backend=result_backend),
            log_path)
        _probe(proc, files, parts, command, broker, queue, wl, wait_s, greenlets, tasks,
               deadlines, started, server_port)
    finally:
        if proc is not None:
            parts["stop"] = _stop(proc, parts, deadlines)
            _stop_strays(files, proc.pid)
        parts["queue_cleanup"] = brokers.delete_queue(broker.url, queue)
        parts["log_tail"] = _log_tail(log_path)
        with contextlib.suppress(ProbeError):
            parts["boot_pids"] = tuple(sorted(b.pid for b in files.records("boot").values()))
        errors = [files.text(os.path.basename(p)) or ""
                  for p in glob.glob(os.path.join(run_dir, "boot-error-*.txt"))]
        ready = parts.get("ready")
        if ready is not None:
            errors += ready.facts.get("hook_errors") or []
        parts["boot_errors"] = tuple(e.strip() for e in errors if e.strip())
        children.remove_temp_dir(run_dir)
    return CeleryRun(command=command, queue=queue, broker=broker.shown, **parts)


def _probe(proc, files: _Files, parts: dict, command: CeleryCommand, broker: brokers.Broker,
           queue: str, wl: dict, wait_s: float, greenlets: int | None,
           tasks: Sequence[UserTask], deadlines: Deadlines, started: float,
           server_port: int | None) -> None:
    """Everything between the worker's start and its stop; fills ``parts``."""
    timings = parts["timings"]
    ready = _wait_ready(proc, files, command, deadlines.boot)
    timings["boot"] = round(time.monotonic() - started, 3)
    if ready is None:
        # Read before the stack dump: its signal can cut short the very call the start waits
        # in (a C sleep returns early), and the worker moves on.
        phase = _furthest_phase(files)
        stall = _stall(files, proc, "never-ready", None, None, (), deadlines.boot, {},
                       "deadline")
        _refuse_unstarted(files, command, deadlines.boot, stall, phase)
        parts["stall"] = stall
        return
    parts["ready"] = ready
    if ready.facts.get("pool_is_gevent") is False:
        parts["not_gevent"] = True
        raise ProbeError(not_gevent(command, ready))
    unknown = [t.name for t in tasks if t.name not in ready.tasks]
    if unknown:
        known = ", ".join(t for t in ready.tasks if t != celery_probe.PROBE_TASK) or "none"
        raise ProbeError(f"--task {unknown[0]}: the worker's app has no such task (it "
                         f"registers: {known}): check the name (celery -A APP inspect "
                         "registered lists them)")
    t_connect = time.monotonic()
    parts["connected"] = _wait_connected(proc, files, ready, deadlines)
    timings["connect"] = round(time.monotonic() - t_connect, 3)
    # Never more at once than the worker can run, nor than the run's greenlets (the server
    # was sized for them: a worker of -c 1000 gets 16 at once, and a note says so).
    size = min(int(ready.concurrency or wl["greenlets"]), int(wl["greenlets"]))
    parts["size"] = size
    probe_deadline = 3 * size * wait_s + deadlines.start + deadlines.per_task * size
    plan = [("warm-up", celery_probe.PROBE_TASK, 1, (0.0,), {}, deadlines.start, 0.0),
            ("alone", celery_probe.PROBE_TASK, 1, (wait_s,), {}, deadlines.start, wait_s),
            ("at once", celery_probe.PROBE_TASK, size, (wait_s,), {}, probe_deadline, wait_s)]
    for task in tasks:
        plan.append(("alone", task.name, 1, tuple(task.args), dict(task.kwargs),
                     deadlines.user_task, None))
        plan.append(("at once", task.name, size, tuple(task.args), dict(task.kwargs),
                     deadlines.user_task + deadlines.per_task * size, None))
    t_tasks = time.monotonic()
    batches: list[Batch] = []
    from geventprobe.app.routes import ConnectionCounter

    with _Sender(broker.url, queue) as send, CpuSampler([ready.pid]) as sampler:
        for label, name, n, args, kwargs, deadline, w in plan:
            counted = server_port if w is None else None
            with ConnectionCounter([ready.pid], counted) as counter:
                batch, stall = _run_batch(send, files, proc, ready.pid, label, name, n, args,
                                          kwargs, deadline, w, deadlines)
            if counted is not None:
                batch = replace(batch, connections=counter.most.get(ready.pid))
            batches.append(batch)
            if stall is not None:
                parts["stall"] = stall
                break
    # Read once the sampler has stopped: a window's end needs a sample after it.
    parts["batches"] = tuple(_with_cpu(b, sampler, ready.pid) for b in batches)
    # Stopped from outside (kill -STOP, a debugger, a frozen cgroup): its figures say nothing.
    # Not a long stretch off the CPU: a hub a driver blocks in C waits as long as the
    # server does, and a task of the user's may wait that long on purpose.
    parts["not_running"] = {pid: seen for pid, seen in sampler.not_running(math.inf).items()}
    timings["tasks"] = round(time.monotonic() - t_tasks, 3)
    if parts.get("stall") is None:
        parts["hub"], parts["facts_after"] = _final(files, ready.pid,
                                                    batches[-1].end if batches else 0.0)
    else:  # a held hub answers nothing: what there is
        parts["hub"] = files.hub(ready.pid)
    hub = parts["hub"]
    if hub is not None:
        # Each batch's lag again from the last hub record: the one read as a batch ended
        # could predate the late tick (the hub writes its file every HUB_WRITE_S, and a
        # blocked one only once it runs again): a lone psycopg2 task read 0 ms in 1 of 3
        # runs, where 205-217 ms was due.
        parts["batches"] = tuple(
            replace(b, hub_lag_s=max(b.hub_lag_s or 0.0, hub.lag_in(b.start, b.end)))
            for b in parts["batches"])


def _with_cpu(b: Batch, sampler: CpuSampler, pid: int) -> Batch:
    """The batch with the worker's CPU, run-queue wait and sleeps over it, over the time
    every probe task only waited on the server (``common_wait``), and how busy it was while
    its p90 task ran."""
    wait = b.common_wait
    p90 = b.p90_task
    ran = run_delay = None
    if p90 is not None and p90.started is not None and p90.finished is not None:
        ran = sampler.delta(pid, "ran", p90.started, p90.finished)
        run_delay = sampler.delta(pid, "run_delay", p90.started, p90.finished)
    return replace(
        b, p90_busy_s=ran + run_delay if ran is not None and run_delay is not None else None,
        cpu_s=sampler.cpu_seconds(pid, b.start, b.end),
        run_delay_s=sampler.delta(pid, "run_delay", b.start, b.end),
        sleeps=sampler.delta(pid, "voluntary", b.start, b.end),
        wait_cpu_s=sampler.cpu_seconds(pid, *wait) if wait else None,
        wait_run_delay_s=sampler.delta(pid, "run_delay", *wait) if wait else None,
        wait_sleeps=sampler.delta(pid, "voluntary", *wait) if wait else None)


#: SIGTERM until SIGKILL for a worker of another pool (a prefork one exits in about 2 s).
NOT_GEVENT_STOP_S = 6.0
#: celery's pools by module, as its -P option names them.
POOLS = {"celery.concurrency.prefork": "prefork", "celery.concurrency.solo": "solo",
         "celery.concurrency.thread": "threads", "celery.concurrency.eventlet": "eventlet",
         "celery.concurrency.gevent": "gevent"}


def with_gevent_pool(argv: Sequence[str]) -> list[str]:
    """``argv`` with its pool option (``-P X``, ``-PX``, ``--pool X``, ``--pool=X``) set to
    gevent, or ``-P gevent`` added after ``worker`` when it has none."""
    out, skip, found = [], False, False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word in ("-P", "--pool") and i + 1 < len(argv):
            out += [word, "gevent"]
            skip = found = True
        elif word.startswith("--pool="):
            out.append("--pool=gevent")
            found = True
        elif word.startswith("-P") and len(word) > 2:
            out.append("-Pgevent")
            found = True
        else:
            out.append(word)
    if not found and "worker" in out:
        at = out.index("worker") + 1
        out[at:at] = ["-P", "gevent"]
    return out


def not_gevent(command: CeleryCommand, ready: CeleryReady) -> str:
    """One line: the worker runs another pool than gevent's, so there is nothing of gevent
    to judge (its figures would be those of prefork processes or threads)."""
    module = ready.pool.rpartition(".")[0]
    name = POOLS.get(module)
    pool = f"celery's {name} pool (-P {name})" if name else f"the pool {ready.pool}"
    patched = ready.facts.get("select_patched") or any(
        p.get("what") == "patch_all" for p in ready.facts.get("patches") or ())
    seen = "" if patched else "; gevent patched nothing in it"
    fixed = shlex.join(with_gevent_pool(command.argv))
    return (f"`{command.shown}` runs {pool}, not gevent's ({ready.pool}{seen}): geventprobe "
            "judges a worker under -P gevent, and this one's figures would say nothing about "
            f"it: start it with -P gevent, e.g. --celery-cmd \"{fixed}\"")


_PHASE_ORDER = ("startup", "app", "worker_init")


def _furthest_phase(files: _Files) -> str:
    """How far the furthest process that loaded our boot dir got in a worker's start-up
    (``celery_watch.SAID_PHASES``; ``startup``: celery never imported)."""
    phases = [files.text(f"phase-{pid}.txt") or "startup" for pid in files.records("boot")]
    return max(phases, key=lambda p: _PHASE_ORDER.index(p) if p in _PHASE_ORDER else 0,
               default="startup")


def _refuse_unstarted(files: _Files, command: CeleryCommand, timeout: float, stall: Stall,
                      furthest: str) -> None:
    """ProbeError (one line) for a worker that never got ready before it was a worker: it
    never imported celery (not a celery worker, or one that waits that long before), or its
    app was still importing when the boot timeout ran out. Returns for a worker that had
    begun to start (worker_init): that is its own verdict."""
    boots = files.records("boot")
    more = (f"raise boot_timeout_s (now {timeout:g} s) in a profile ([workload] "
            "boot_timeout_s = 300, --config FILE)")
    if furthest == "startup":
        raise ProbeError(f"`{command.shown}` never imported celery in the {timeout:g} s a "
                         "worker has to get ready: it is not a celery worker (or it waits that "
                         "long before it imports celery): give the command that starts your "
                         "celery worker, e.g. --celery-cmd \"celery -A proj worker -P gevent\", "
                         f"or {more}")
    if furthest == "app":
        since = min((b.at for b in boots.values()), default=time.monotonic())
        frame = _user_frame(stall.main_stack, command.cwd)
        where = f"; its main thread waited at {frame}" if frame else ""
        raise ProbeError(f"your celery app was still importing {time.monotonic() - since:.0f} s "
                         "after the worker started (celery had loaded; the worker itself had "
                         f"not begun to start), longer than the {timeout:g} s a worker has to "
                         f"get ready: if it is meant to take that long, {more}; otherwise find "
                         "what the import waits for (a connection or a network call made at "
                         f"import time{where})")


def _user_frame(frames: Sequence[tuple[str, int, str]], cwd: str) -> str | None:
    """The innermost frame of the user's own code, ``tasks.py:5 in <module>``."""
    from geventprobe.worker.monitor import is_user_code, short

    for path, line, func in reversed(frames):
        if is_user_code(path):
            rel = os.path.relpath(path, cwd) if os.path.isabs(path) else path
            shown = rel if not rel.startswith("..") else short(path)
            return f"{shown}:{line} in {func}"
    return None


NOT_BOOTED = ("no Python process it started loaded geventprobe's boot dir (a command that "
              "ignores PYTHONPATH, python -E or -I, or a wrapper that resets the environment?)")


def _wait_ready(proc, files: _Files, command: CeleryCommand, timeout: float
                ) -> CeleryReady | None:
    """The worker's ready record; None after ``timeout`` (a never-ready Stall).

    ProbeError (one line) when it exited first, or when after ``timeout`` none of its
    Python processes loaded our boot dir: then we are not in, and it is not the worker's
    fault.
    """
    deadline = time.monotonic() + timeout
    while True:
        children.check_guards()
        ready = files.records("celery-ready")
        if ready:
            return min(ready.values(), key=lambda r: r.at)
        booted = bool(files.records("boot"))
        if proc.poll() is not None:
            strays = _strays(files, proc.pid)
            # A worker does not exit cleanly before it is ready, unless its command left it
            # running in the background: the re-executed worker boots a moment later.
            settle = time.monotonic() + (1.0 if proc.returncode == 0 else 0.0)
            while not strays and time.monotonic() < settle:
                time.sleep(0.05)
                strays = _strays(files, proc.pid)
            if strays:
                raise ProbeError(
                    f"the command that starts your worker {children.describe_exit(proc.returncode)}"
                    f" before the worker was ready, while a process it started (pid "
                    f"{strays[0].pid}) ran on in the background: it detaches the worker "
                    "(--detach, a daemonizing wrapper, `&` in a script), so geventprobe could "
                    "neither watch nor stop it; geventprobe stopped it: give a command that "
                    f"runs the worker in the foreground (in {command.cwd})")
            log = _log_tail(os.path.join(files.run_dir, LOG_NAME))
            also = "" if booted else f" ({NOT_BOOTED})"
            raise ProbeError(
                f"the celery worker {children.describe_exit(proc.returncode)} before it was "
                f"ready{also}: {telling_line(log).rstrip('.')}: check that `{command.shown}` "
                f"starts it by hand (in {command.cwd})")
        if time.monotonic() > deadline:
            if not booted:
                raise ProbeError(f"geventprobe could not get into the worker: in {timeout:g} s "
                                 f"{NOT_BOOTED}: start it with a plain `python` or `celery` "
                                 "command")
            return None
        time.sleep(0.02)


def _strays(files: _Files, spawned: int) -> list:
    """Processes that loaded our boot dir and still run, other than the one we spawned: a
    worker that detached itself (its own session: the group stop does not reach it). Each is
    proven ours by the file faulthandler holds open in it, ``stacks-<pid>.txt`` in this run's
    dir (its environment cannot tell: celery's process title overwrites it)."""
    import psutil

    found = []
    for pid in sorted(b.pid for b in files.records("boot").values()):
        if pid == spawned:
            continue
        mine = os.path.join(files.run_dir, f"stacks-{pid}.txt")
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE and any(
                    f.path == mine for f in p.open_files()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _stop_strays(files: _Files, spawned: int) -> tuple[int, ...]:
    """SIGKILL every stray of ``_strays`` and wait (3 s at most) until it is gone."""
    import psutil

    strays = _strays(files, spawned)
    for p in strays:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(strays, timeout=3)
    return tuple(p.pid for p in strays)


def _wait_connected(proc, files: _Files, ready: CeleryReady, d: Deadlines
                    ) -> CeleryConnected | None:
    """The connect phase's record; None when it did not come (a hub that never runs)."""
    deadline = time.monotonic() + d.connect
    while time.monotonic() < deadline and proc.poll() is None:
        children.check_guards()
        found = files.records("connected")
        if str(ready.pid) in found:
            return found[str(ready.pid)]
        if time.monotonic() - ready.at > d.hub_silent and files.hub(ready.pid) is None:
            return None  # the probe's greenlet never ran: its hub is held
        time.sleep(0.02)
    return None


class _Sender:
    """Sends tasks to our queue on the run's broker, and to nothing else.

    celery only builds the messages here (``as_task_v2``, its protocol): a celery app takes
    its broker and result backend from ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``
    before anything it is given, and in the user's environment those are the user's (issue
    25: the tasks went to their redis, and the result backend subscribed there). So the
    connection is kombu's own, to ``url`` alone, and no result is ever asked for: the worker's
    files say how each task went.
    """

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue

    def __enter__(self) -> _Sender:
        from celery import Celery
        from kombu import Connection, Exchange, Producer, Queue

        self._app = Celery("geventprobe", set_as_current=False)
        self._conn = Connection(self.url)
        self._target = Queue(self.queue, Exchange(self.queue, type="direct"),
                             routing_key=self.queue)
        self._producer = Producer(self._conn)
        return self

    def __call__(self, name: str, args: tuple, kwargs: dict) -> str:
        """Send one task; its id."""
        from kombu.utils.uuid import uuid

        task_id = uuid()
        # ignore_result None, as send_task sends it: the task's own setting decides (False
        # would make the worker store the probe task's result, a write to the backend that
        # yields to the hub inside every task: measured, the 16 overlapped 3 at a time in a
        # blocked worker).
        headers, properties, body, _ = self._app.amqp.as_task_v2(task_id, name, args, kwargs,
                                                                 ignore_result=None)
        self._producer.publish(body, exchange="", routing_key=self.queue,
                               declare=[self._target], headers=headers, serializer="json",
                               delivery_mode=2, retry=True, retry_policy={"max_retries": 3},
                               **properties)
        return task_id

    def __exit__(self, *exc_info) -> None:
        with contextlib.suppress(Exception):
            self._conn.release()
        with contextlib.suppress(Exception):
            self._app.close()


def _run_batch(send: _Sender, files: _Files, proc, pid: int, label: str, name: str, n: int,
               args: tuple, kwargs: dict, deadline_s: float, wait_s: float | None,
               d: Deadlines) -> tuple[Batch, Stall | None]:
    """Send ``n`` tasks at once to our queue; wait for them within ``deadline_s``, or until
    none has started ``d.start`` after they were sent, or the hub has been held that long."""
    sent: dict[str, float] = {}
    start = time.monotonic()
    for _ in range(n):
        t = time.monotonic()
        sent[send(name, args, kwargs)] = t
    deadline = start + deadline_s
    done: dict = {}
    why = None
    while True:
        children.check_guards()
        finished = files.records("task")
        done = {i: finished[i] for i in sent if i in finished}
        now = time.monotonic()
        if len(done) == n:
            break
        if proc.poll() is not None:
            why = "exited"
            break
        if now - start > d.start:
            if not done and not any(i in files.records("started") for i in sent):
                why = "none started"
                break
            hub = files.hub(pid)
            if hub is not None and now - hub.last_tick > d.start:
                why = "hub held"
                break
        if now > deadline:
            why = "deadline"
            break
        time.sleep(0.01)
    end = (max(r.finished for r in done.values()) if len(done) == n else time.monotonic())
    received = files.records("received")
    started = files.records("started")
    figures = []
    for task_id, t_sent in sent.items():
        r = done.get(task_id)
        figures.append(TaskFigures(
            task_id=task_id, name=name, sent=t_sent,
            received=r.received if r is not None and r.received is not None else
            (received[task_id].at if task_id in received else None),
            started=r.started if r is not None else
            (started[task_id].at if task_id in started else None),
            finished=r.finished if r is not None else None,
            state=r.state if r is not None else None,
            error=r.error if r is not None else None,
            celery_runtime=r.celery_runtime if r is not None else None,
            error_origin=r.error_origin if r is not None else None,
            probe_connect=_window(r.connect if r is not None else None),
            probe_query=_window(r.query if r is not None else None),
            probe_running=r.running if r is not None else None))
    hub = files.hub(pid)
    batch = Batch(label=label, task=name, size=n, wait_s=wait_s, tasks=tuple(figures),
                  start=start, end=end, deadline_s=round(deadline_s, 3),
                  hub_lag_s=hub.lag_in(start, end) if hub is not None else None)
    if batch.complete:
        return batch, None
    kind = "never-started" if not any(f.started is not None for f in figures) else "stalled"
    return batch, _stall(files, proc, kind, label, name, figures, time.monotonic() - start,
                         {"pid": pid}, why or "deadline")


def _window(window) -> tuple[float, float] | None:
    return None if not window else (float(window[0]), float(window[1]))


def _stall(files: _Files, proc, kind: str, label: str | None, task: str | None, figures,
           waited: float, known: dict, why: str) -> Stall:
    """What the worker was doing when we gave up: its threads' and greenlets' stacks."""
    boots = {b.pid: b for b in files.records("boot").values()}
    pid = known.get("pid")
    # The worker's pid once it was ready; before that, every process that loaded our boot.
    pids = [pid] if pid is not None else sorted(boots)
    stacks, greenlets = "", None
    if pids and proc.poll() is None:
        with contextlib.suppress(OSError):
            open(os.path.join(files.run_dir, "dump"), "w").close()
        for p in pids:
            if p in boots:
                with contextlib.suppress(OSError):
                    os.kill(p, boots[p].stack_signal)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            found = {p: files.text(f"stacks-{p}.txt") or "" for p in pids}
            stacks = "\n".join(f"pid {p}:\n{t}" if len(pids) > 1 else t
                               for p, t in found.items() if t)
            greenlets = files.text(f"greenlets-{pid}.txt") if pid is not None else None
            # A held hub never writes the greenlets' file: the threads' stacks suffice.
            if all(found.values()) and (greenlets is not None or pid is None
                                        or why in ("hub held", "none started")):
                break
            time.sleep(0.05)
    hub = files.hub(pid) if pid is not None else None
    return Stall(
        kind=kind, batch=label, task=task, waited_s=round(waited, 3),
        received=sum(1 for f in figures if f.received is not None),
        started=sum(1 for f in figures if f.started is not None),
        finished=sum(1 for f in figures if f.finished is not None),
        sent=len(figures),
        hub_silent_s=round(time.monotonic() - hub.last_tick, 3) if hub is not None else None,
        stacks=stacks.strip(), greenlets=greenlets.strip() if greenlets else None, why=why)


def _final(files: _Files, pid: int, after: float
           ) -> tuple[CeleryHub | None, CeleryFacts | None]:
    """The hub record written after ``after`` (the last task) and the facts once the tasks
    ran, waiting a moment for both."""
    with contextlib.suppress(OSError):
        open(os.path.join(files.run_dir, "facts"), "w").close()
    deadline = time.monotonic() + 3 * celery_probe.HUB_WRITE_S + 0.5
    hub = files.hub(pid)
    facts = None
    while time.monotonic() < deadline:
        hub = files.hub(pid) or hub
        facts = files.records("facts").get(str(pid))
        if facts is not None and hub is not None and hub.written >= after:
            break
        time.sleep(0.02)
    return hub, facts


def _stop(proc: subprocess.Popen, parts: dict, d: Deadlines) -> StopFigures:
    """Stop the worker and reap everything in its process group.

    Once every figure is in, the quick way: SIGKILL at once. Nothing of ours is in flight
    (every task it took has finished, and was acknowledged when it was received), its
    connections to the server and the broker close with it, and celery's warm shutdown on
    SIGTERM took 2.7-4.9 s (its consumer sees the request only when its 2 s broker poll
    returns). A stalled worker (or a failed run) first gets SIGTERM: whether it obeys is
    evidence; a held hub ignores it, and SIGKILL follows after ``d.stop_stalled``.
    """
    t0 = time.monotonic()
    if proc.poll() is not None:
        code = proc.returncode
        children.stop(proc)  # its group may hold orphans
        return StopFigures(signal="none", seconds=0.0, returncode=code, exited_before=True)
    quick = parts.get("stall") is None
    if parts.pop("not_gevent", False):
        # Another pool than gevent's: a prefork worker removes its temp dir (pymp-*) on
        # SIGTERM, in about 2 s (measured 1.97-2.2 s), and leaves it on SIGKILL.
        children.stop(proc, signal.SIGTERM, timeout=NOT_GEVENT_STOP_S)
    elif quick:
        children.stop(proc, signal.SIGKILL, timeout=5)
    else:
        children.stop(proc, signal.SIGTERM, timeout=d.stop_stalled)
    seconds = round(time.monotonic() - t0, 3)
    parts["timings"]["stop"] = seconds
    killed = proc.returncode == -signal.SIGKILL
    return StopFigures(signal="SIGKILL" if killed else "SIGTERM", seconds=seconds,
                       returncode=proc.returncode, ignored_sigterm=killed and not quick)
