"""What a celery worker under test writes for the parent: typed, versioned records.

The worker (``celery_probe.py``) writes each record as one JSON file in the run dir
(``GEVENTPROBE_CELERY_RUN_DIR``), renamed into place whole; the parent
(``processes/celery_workers.py``) reads it back with ``load``, which refuses a record
of another version in one line. Times are ``time.monotonic()``: on Linux one clock for
every process of the machine, so the parent lines the worker's times up with its own
(when it sent a task) and with its CPU samples.

Files, by who writes them and when:

``boot-<pid>.json``      ``Boot``: a Python process started with our boot (the import
                          watch is in); it takes ``stack_signal`` to dump its stacks
``ready-<pid>.json``     ``Ready``: celery's ``worker_ready``, written in the signal
                          itself (so a worker whose hub never runs still writes it)
``connected-<pid>.json`` ``Connected``: the connect phase, from a greenlet: only a hub
                          that runs writes it
``hub-<pid>.json``       ``Hub``: the heartbeat, rewritten every ``HUB_WRITE_S``
``facts-<pid>.json``     ``FactsAfter``: the facts once the tasks ran (on request)
``received-<id>.json``   ``TaskMark``: celery's ``task_received`` (the consumer took
                          the task off the broker)
``started-<id>.json``    ``TaskMark``: ``task_prerun`` (the task's greenlet runs it)
``task-<id>.json``       ``TaskDone``: ``task_postrun`` (the task finished, either way)
``stacks-<pid>.txt``     faulthandler's dump of every thread, on ``stack_signal``
``greenlets-<pid>.txt``  gevent's run info (every greenlet's stack), on request

The parent's requests are empty files it creates in the run dir: ``dump`` (write
``greenlets-<pid>.txt``) and ``facts`` (write ``facts-<pid>.json``); the worker's hub
writer answers each once.

Like the rest of ``worker/``, this imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

RECORD_VERSION = 1
#: How often the worker rewrites ``hub-<pid>.json`` (s).
HUB_WRITE_S = 0.2
#: A heartbeat tick at least this late is kept, with when it was due (s).
LATE_TICK_S = 0.002


class RecordError(ValueError):
    """A record file that is not ours, or of another version."""


@dataclass(frozen=True)
class Boot:
    """A Python process started with our boot dir: the import watch is in, and the process
    takes ``stack_signal``. Written while Python starts (by hand, without ``json``, which
    the process has not imported yet)."""

    pid: int
    stack_signal: int
    """Sending this signal makes the process dump every thread's stack to ``stacks-<pid>.txt``."""
    at: float
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class Ready:
    """celery's ``worker_ready``: the consumer is about to take tasks."""

    pid: int
    at: float
    hostname: str
    pool: str
    """The pool class, e.g. ``celery.concurrency.gevent.TaskPool``."""
    concurrency: int
    consumes: tuple[str, ...]
    """The queues the worker consumes from now (ours alone)."""
    user_queues: tuple[str, ...]
    """The queues it would have consumed from without us (never touched)."""
    tasks: tuple[str, ...]
    """Every task its app registers (celery's own ``celery.*`` left out)."""
    signals: tuple[tuple[str, float], ...]
    """The celery signals this process received so far, with when."""
    versions: dict
    """celery, kombu, gevent, greenlet, Python."""
    facts: dict
    """The driver facts (``probe.collect_facts``) and who imported what when (``celery_watch``)."""
    error: str | None = None
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class Connected:
    """The connect phase, run in a greenlet once the worker is ready (``probe._connect_phase``)."""

    pid: int
    single: tuple[float, float]
    """One connection alone: its start and end."""
    windows: tuple[tuple[float, float], ...]
    """Each round of ``greenlets`` connections opened at once."""
    greenlets: int
    error: str | None = None
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class FactsAfter:
    """The facts again once the tasks ran (on the parent's ``facts`` request): an app that
    imports its driver lazily (Django does, on the first query) has imported it by now."""

    pid: int
    at: float
    facts: dict
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class Hub:
    """The heartbeat greenlet: a tick every ``period`` s, the late ones kept."""

    pid: int
    period: float
    started: float
    ticks: int
    last_tick: float
    """When the heartbeat last ran: long ago means the hub has been held since."""
    late: tuple[tuple[float, float], ...]
    """(when the tick was due, how late it came) for each tick ``LATE_TICK_S`` late or more."""
    written: float
    blocked: tuple[dict, ...] = ()
    """gevent's monitor thread (``worker/monitor.py``): each stack that held the hub, once:
    ``frames`` (innermost last), ``user`` (the index of the innermost frame of the user's
    code, or None) and ``times``: every look of the monitor (each ``monitor_ms``) that found
    the hub held there."""
    version: int = RECORD_VERSION

    def lag_in(self, start: float, end: float) -> float:
        """The latest tick due inside ``[start, end]``, s (0 when none was late)."""
        return max((lag for due, lag in self.late if start <= due <= end), default=0.0)


@dataclass(frozen=True)
class TaskMark:
    """A task got somewhere: ``received`` (celery's ``task_received``: the consumer took it
    off the broker) or ``started`` (``task_prerun``: its greenlet began to run it)."""

    task_id: str
    what: str
    at: float
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class TaskDone:
    """One task, from ``task_prerun`` to ``task_postrun``, as the worker saw it."""

    task_id: str
    name: str
    pid: int
    received: float | None
    started: float
    finished: float
    state: str | None
    """celery's state: ``SUCCESS``, ``FAILURE``, ``RETRY``..."""
    celery_runtime: float | None
    """celery's own runtime figure (``task_success``), what its events and Flower show."""
    error: str | None = None
    probe: dict | None = None
    """A probe task's own windows: ``connect`` and ``query``, each [start, end]."""
    version: int = RECORD_VERSION


def _tuples(value):
    """JSON arrays back into the tuples the records declare (objects stay dicts)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def to_json(record) -> str:
    """The record as one JSON object, with its kind."""
    return json.dumps(dict(dataclasses.asdict(record), kind=type(record).__name__))


def from_json(text: str, kind: type):
    """Parse a record of ``kind``; RecordError names what is wrong in one line."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RecordError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != kind.__name__:
        raise RecordError(f"not a {kind.__name__} record")
    if data.get("version") != RECORD_VERSION:
        raise RecordError(f"a {kind.__name__} record of version {data.get('version')!r}, "
                          f"this geventprobe reads version {RECORD_VERSION}: the worker ran "
                          "another geventprobe's code")
    fields = {f.name for f in dataclasses.fields(kind)}
    try:
        return kind(**{k: _tuples(v) for k, v in data.items() if k in fields})
    except TypeError as exc:
        raise RecordError(f"a {kind.__name__} record with missing fields ({exc})") from None


def write(run_dir: str, name: str, record) -> None:
    """Write ``record`` as ``name`` in ``run_dir``, whole (write, then rename)."""
    path = os.path.join(run_dir, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(to_json(record))
    os.replace(tmp, path)


def load(path: str, kind: type):
    """Read one record file; RecordError (or OSError) when it cannot be."""
    with open(path) as f:
        return from_json(f.read(), kind)
