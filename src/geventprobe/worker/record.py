"""What a worker tells the parent: typed records, one per file, with a version the parent checks.

A probed worker (and the throwaway child that reads the user's gunicorn settings) reports
only through JSON files in the run directory, each written whole then renamed into place:

==========================  ==================  ==============================================
file                        record              written
==========================  ==================  ==============================================
``ready-<pid>.json``        ``Ready``           connections open, waiting for the parent's go
``result-<pid>.json``       ``ProbeResult``     the probe's windows and facts (or its error)
``route-ready-<pid>.json``  ``RouteReady``      ``--route``: ready for the route phase
``routes-<pid>.json``       ``RoutePhase``      ``--route``: heartbeat and requests meanwhile
``app-error-<pid>.json``    ``AppError``        ``--app``: the app (or config) failed to load
``importing-<pid>.json``    ``Importing``       ``--app``: the worker started importing the app
settings.json               ``GunicornSettings``  ``--app``: the effective gunicorn settings
routes.json                 ``AppRoutes``       ``--route auto``: the app's declared routes
==========================  ==================  ==============================================

A celery worker (``--celery``, ``--celery-cmd``) writes its own records in its run dir
(``CELERY_PREFIXES``: ``CeleryBoot``, ``CeleryReady``, ``CeleryConnected``, ``CeleryHub``,
``CeleryFacts``, ``TaskMark``, ``TaskDone``), with the same version and the same checks.

``dump`` adds ``RECORD_VERSION``; ``load`` refuses a file of another version, or one whose
fields have the wrong types, with ``RecordError`` (one line: the parent shows it and exits 2).
A version mismatch means the worker ran another geventprobe than the parent (a stale copy
on ``PYTHONPATH`` or in the project directory): raise the version whenever a field changes.

Standard library only, and nothing slow to import: this runs inside the probed workers,
also in a version matrix's isolated environment where only ``geventprobe/worker/`` is on
``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

RECORD_VERSION = 8
"""Version of every record in this module (1: the untyped dicts before it was checked;
3: ``RoutePhase.parked`` and ``RoutePhase.bindings``; 4: ``BlockedEvent.source`` and
``BlockedEvent.gil_held``; 5: ``Importing``, ``RoutePhase.aborted`` and
``GunicornSettings.limit_request_line``; 6: ``Running``, ``ProbeResult.idle_running``,
``TaskDone.running`` and ``RoutePhase.stall_watch_off``; 7: ``ProbeResult.called_off``)."""


class RecordError(Exception):
    """A worker's file that this geventprobe cannot read: the message is the one line shown."""


@dataclass(frozen=True)
class BlockedEvent:
    """gevent's monitor thread found the hub blocked (``worker/monitor.py``)."""

    t: float
    """When (``time.monotonic``, the parent's clock too)."""
    s: float
    """How long the monitor said the hub had been blocked, s."""
    frames: list[str]
    """The hub thread's stack, ``file:line in function: source``, outermost first."""
    user: int | None
    """Index in ``frames`` of the innermost frame of the user's own code (None: none)."""
    source: str = "monitor"
    """Who caught it: ``monitor`` (gevent's monitor thread) or ``alarm`` (the stall watch's
    SIGALRM, ``worker/stall_watch.py``, for a stall the monitor did not report)."""
    gil_held: bool = False
    """``alarm`` only: the stall watch's helper thread could not run for half the threshold
    before the alarm: the stalled call kept the GIL."""


@dataclass(frozen=True)
class RunningSite:
    """Where greenlets that ran on the hub's thread resumed (``worker/running.py``)."""

    frame: str
    """The innermost frame that is not gevent's, the standard library's or geventprobe's,
    ``file:line in function: source``."""
    driver: bool
    """The stack passed through the driver (psycopg, psycopg2): a wait loop in a query."""
    user: bool
    """``frame`` is the app's own code (not a library's)."""
    seconds: float
    """How long greenlets resumed here ran, in all."""
    switches: int
    """How often they were switched to."""


@dataclass(frozen=True)
class Running:
    """What ran on the hub's thread over a window, per site."""

    seconds: float
    """The window's length."""
    sites: list[RunningSite]
    """The site that ran longest first; the hub's own time and geventprobe's are in none."""


@dataclass(frozen=True)
class ConnectPhase:
    """The connect phase's times: one connection alone, then each window of G at once."""

    single: list[float]
    """[start, end] of the lone connect."""
    windows: list[list[float]]
    """[start, end] of each connect window, in order."""
    connects: int = 0
    """Connections opened at once in each window: the greenlets, or ``connect_min_connects``
    when there are fewer (0: one per greenlet)."""


@dataclass(frozen=True)
class Ready:
    """``ready-<pid>.json``: the worker's connections are open; it waits for ``go``."""

    pid: int
    port: int | None
    """The port its gunicorn listens on (the parent's HTTP load and routes go there)."""
    facts: dict
    """What it runs (``ProbeResult.facts``): all there is if the worker dies before its result."""


@dataclass(frozen=True)
class ProbeResult:
    """``result-<pid>.json``: one worker's whole probe, or why it failed."""

    pid: int
    error: str | None = None
    """The exception that ended the probe, one line (None: it completed)."""
    traceback: str | None = None
    facts: dict = field(default_factory=dict)
    """What the worker runs, as it reported it: driver and build, wait function or callback,
    what gevent patched and who imported the driver when (kept as-is in the run record's
    ``facts``; ``core/causes.py`` reads it)."""
    facts_after: dict | None = None
    """The same facts at the end (the wait function is looked up on every query)."""
    connect: ConnectPhase | None = None
    blocked_connect: list[BlockedEvent] = field(default_factory=list)
    """The monitor thread's events during the connect phase."""
    wait_seconds: float = 0.0
    """w: each greenlet's ``pg_sleep(w)`` in a window."""
    windows: list[list[float]] = field(default_factory=list)
    """[start, end] of each wait window."""
    called_off: list[int] = field(default_factory=list)
    """Per wait window, the sleeps called off once BLOCKING was decided (0: every one ran
    out; ``probe.wait_window``)."""
    idle_window: list[float] | None = None
    """[start, end] of the idle window: every connection open and used once, none in use
    (None: none in this record)."""
    idle_running: Running | None = None
    """Who was running on the hub's thread during the idle window (``worker/running.py``)."""
    blocked: list[BlockedEvent] = field(default_factory=list)
    """The monitor thread's events during the wait windows."""
    select1_window: list[float] | None = None
    """[start, end] of the ``SELECT 1`` loop."""
    select1_latencies_us: list[int] = field(default_factory=list)
    heartbeat_expected: list[float] = field(default_factory=list)
    """When each heartbeat tick was due."""
    heartbeat_lag: list[float] = field(default_factory=list)
    """How late each tick ran, s."""


@dataclass(frozen=True)
class Importing:
    """``importing-<pid>.json``: ``--app``: the worker started importing the user's app."""

    pid: int
    t: float
    """When (``time.monotonic``)."""


@dataclass(frozen=True)
class RouteReady:
    """``route-ready-<pid>.json``: the worker's request phase is over; routes may come."""

    pid: int


@dataclass(frozen=True)
class RoutePhase:
    """``routes-<pid>.json``: what a worker saw while the parent drove the user's routes."""

    pid: int
    heartbeat_expected: list[float]
    heartbeat_lag: list[float]
    requests: list[float]
    """When each request of the app (not the probe's own route) started."""
    blocked: list[BlockedEvent]
    aborted: bool = False
    """Written as gunicorn killed the worker (WORKER TIMEOUT): what it saw until then."""
    parked: dict = field(default_factory=dict)
    """issue 20: where the app's request greenlets were parked (``worker/parked.py``)."""
    bindings: list[dict] = field(default_factory=list)
    """issue 20: the app's names still bound to an original gevent replaced
    (``worker/bindings.py``)."""
    stall_watch_off: str | None = None
    """Why the stall watch did not watch the whole phase (``worker/stall_watch.py``: the app
    took its signal, no timer); None when it did, or was turned off by the user."""
    heartbeat_waited: list[float] = field(default_factory=list)
    """Beside each ``heartbeat_lag``: how long the hub's thread waited for a core meanwhile
    (runnable, not running), s; empty where it could not be read."""


@dataclass(frozen=True)
class AppError:
    """``app-error-<pid>.json``: the user's app or config failed to load, in its own words."""

    pid: int
    where: str
    """``while the gunicorn worker imported the app``..."""
    error: str
    """``ExceptionType: its last line``."""
    origin: str | None = None
    """``file, line N`` of the user's code that raised, when it is theirs."""


@dataclass(frozen=True)
class GunicornSettings:
    """``settings.json`` of ``worker/inspect_conf.py``: the user's effective gunicorn settings,
    or why gunicorn refused them (``ok`` false: ``stage`` and ``error`` say so)."""

    ok: bool
    stage: str | None = None
    """Where it failed: ``config`` (their config file), ``settings``, ``inspect``."""
    error: str | None = None
    config: str | None = None
    """The config file gunicorn read (or ``python:module``)."""
    worker_class: str | None = None
    gevent: bool = False
    """True when the worker class is gevent's (or derives from it)."""
    workers: int = 1
    preload: bool = False
    daemon: bool = False
    timeout: int | float | None = None
    max_requests: int = 0
    reuse_port: bool = False
    app: str | None = None
    chdir: str | None = None
    hooks: list[str] = field(default_factory=list)
    """The server hooks their config defines (``post_fork``...)."""
    limit_request_line: int = 4094
    """gunicorn's ``limit_request_line`` (0: unlimited): a longer request line gets 414."""


@dataclass(frozen=True)
class FoundRoute:
    """One route of the user's app as its framework declares it (``worker/list_routes.py``)."""

    path: str
    """``/items`` for a fixed path; the pattern as declared (``/items/<int:pk>``) otherwise."""
    methods: list[str]
    """The methods it answers (empty: any, as a Django function view)."""
    params: list[str]
    """The parameters its path needs (``pk``); empty for a fixed path."""
    view: str
    """``module.function`` (or the endpoint) that serves it."""
    fixed: bool = True
    """False when the pattern matches many paths without naming parameters (a regex)."""


@dataclass(frozen=True)
class AppRoutes:
    """``routes.json`` of ``worker/list_routes.py``: the app's routes for ``--route auto``, or
    why they could not be listed (``ok`` false: ``stage`` and ``error`` say so)."""

    ok: bool
    framework: str | None = None
    """``django`` or ``flask``; None when the app is neither."""
    routes: list[FoundRoute] = field(default_factory=list)
    stage: str | None = None
    """Where it failed: ``config``, ``import`` (the app), ``framework`` (neither Django nor
    Flask), ``list``."""
    error: str | None = None
    callable_type: str | None = None
    """The type of the WSGI callable gunicorn would serve (``module.Class``)."""


PREFIXES = {"ready": Ready, "result": ProbeResult, "route-ready": RouteReady,
            "routes": RoutePhase, "app-error": AppError, "importing": Importing}
"""File name prefix (``<prefix>-<pid>.json``) → the record it holds."""


# ------------------------------------------------------------------ a celery worker's records
# Written by ``celery_probe.py`` (``CeleryBoot`` by ``celery_watch.py``) in the celery run
# dir, read by ``kinds/celery/workers.py``. Times are ``time.monotonic()``.


@dataclass(frozen=True)
class CeleryBoot:
    """``boot-<pid>.json``: a Python process started with geventprobe's boot dir (the import
    watch is in; ``stack_signal`` makes it dump every thread's stack). Written while Python
    starts, by hand, without ``json`` (``celery_watch.install``)."""

    pid: int
    stack_signal: int
    at: float


@dataclass(frozen=True)
class CeleryReady:
    """``celery-ready-<pid>.json``: celery's ``worker_ready``, written in the signal itself (a
    worker whose hub never runs still gets that far)."""

    pid: int
    at: float
    hostname: str
    pool: str
    """The pool class, e.g. ``celery.concurrency.gevent.TaskPool``."""
    concurrency: int
    consumes: list[str]
    """The queues the worker consumes from now (geventprobe's alone)."""
    user_queues: list[str]
    """The queues it would have consumed from without geventprobe (never touched)."""
    tasks: list[str]
    """Every task its app registers (celery's own ``celery.*`` left out)."""
    signals: dict
    """Each celery signal this process received so far → when it first did."""
    versions: dict
    """celery, kombu, gevent, greenlet, Python."""
    facts: dict
    """``probe.collect_facts`` with the celery source: driver, wait function, patching, who
    imported the driver when (``celery_watch``)."""
    error: str | None = None
    """Why the facts could not be collected (the worker runs on without them)."""


@dataclass(frozen=True)
class CeleryConnected:
    """``connected-<pid>.json``: the connect phase, from a greenlet once the worker is ready
    (only a hub that runs writes it)."""

    pid: int
    greenlets: int
    connect: ConnectPhase | None = None
    error: str | None = None


@dataclass(frozen=True)
class CeleryFacts:
    """``facts-<pid>.json``: the facts again once the tasks ran (on the parent's request): an
    app that imports its driver lazily (Django, on the first query) has imported it by now."""

    pid: int
    at: float
    facts: dict


@dataclass(frozen=True)
class BlockedSeen:
    """One stack gevent's monitor thread found holding the hub, with every look that found it
    there (a hub held 3 s at one line is 60 looks of a 50 ms monitor: one entry)."""

    frames: list[str]
    """``file:line in function: source``, outermost first."""
    user: int | None
    """Index in ``frames`` of the innermost frame of the user's own code (None: none)."""
    times: list[float]
    """When each look found it."""
    seconds: list[float]
    """How long the hub had been held at each look, s."""


@dataclass(frozen=True)
class CeleryHub:
    """``hub-<pid>.json``: the heartbeat (a tick every ``period`` s; the late ones kept) and
    the monitor's stacks, rewritten every ``celery_probe.HUB_WRITE_S``."""

    pid: int
    period: float
    started: float
    ticks: int
    last_tick: float
    """When the heartbeat last ran: long ago means the hub has been held since."""
    late: list[list[float]]
    """[when the tick was due, how late it came] for each tick ``LATE_TICK_S`` or more late."""
    written: float
    blocked: list[BlockedSeen] = field(default_factory=list)

    def lag_in(self, start: float, end: float) -> float:
        """The latest tick due inside ``[start, end]``, s (0 when none was late)."""
        return max((lag for due, lag in self.late if start <= due <= end), default=0.0)

    def events(self) -> list[BlockedEvent]:
        """The monitor's looks as ``BlockedEvent``s (what ``core/blocked.py`` counts)."""
        return [BlockedEvent(t=t, s=s, frames=seen.frames, user=seen.user)
                for seen in self.blocked for t, s in zip(seen.times, seen.seconds)]


@dataclass(frozen=True)
class TaskMark:
    """``received-<id>.json`` (celery's ``task_received``: the consumer took it off the
    broker) or ``started-<id>.json`` (``task_prerun``: its greenlet began to run it)."""

    task_id: str
    what: str
    at: float


@dataclass(frozen=True)
class TaskDone:
    """``task-<id>.json``: one task, from ``task_prerun`` to ``task_postrun``."""

    task_id: str
    name: str
    pid: int
    received: float | None
    started: float
    finished: float
    state: str | None
    """celery's state: ``SUCCESS``, ``FAILURE``, ``RETRY``..."""
    celery_runtime: float | None
    """celery's own runtime figure (``task_success``): what its events and Flower show."""
    error: str | None = None
    """The exception, ``Type: message`` (its last line)."""
    error_origin: str | None = None
    """``file:line in function`` of the user's code that raised it, when it is theirs."""
    connect: list[float] | None = None
    """A probe task's connection: [start, end]."""
    query: list[float] | None = None
    """A probe task's ``pg_sleep``: [start, end]."""
    running: Running | None = None
    """A probe task's: who was running on the hub's thread while its ``pg_sleep`` waited on
    the server (``worker/running.py``)."""


CELERY_PREFIXES = {"boot": CeleryBoot, "celery-ready": CeleryReady,
                   "connected": CeleryConnected, "facts": CeleryFacts, "hub": CeleryHub,
                   "received": TaskMark, "started": TaskMark, "task": TaskDone}
"""A celery run dir's file prefixes (``<prefix>-<pid or task id>.json``) → their records."""


def dump(record) -> dict:
    """``record`` as JSON-ready data, with the version."""
    return {"version": RECORD_VERSION, **dataclasses.asdict(record)}


def write(path: str, record) -> None:
    """Write ``record`` to ``path`` whole: to a temp file, then renamed into place, so the
    parent never reads half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(dump(record), f)
    os.replace(tmp, path)


_GENERIC = re.compile(r"^(\w+)\[(.*)\]$")


def _check(value, kind: str, where: str):
    """``value`` checked against the annotation text ``kind``, nested records built."""
    kind = kind.strip()
    if "|" in kind:
        options = [k.strip() for k in kind.split("|")]
        if value is None and "None" in options:
            return None
        problems = []
        for option in (k for k in options if k != "None"):
            try:
                return _check(value, option, where)
            except RecordError as exc:
                problems.append(str(exc))
        raise RecordError(problems[0])
    generic = _GENERIC.match(kind)
    if generic and generic.group(1) == "list":
        if not isinstance(value, list):
            raise RecordError(f"{where} is {_shown(value)}, not a list")
        inner = generic.group(2)
        if inner in ("int", "float"):  # thousands of samples: one pass, no call per item
            bad = next((i for i, v in enumerate(value) if isinstance(v, bool)
                        or not isinstance(v, _BASIC[inner])), None)
            if bad is None:
                return [float(v) for v in value] if inner == "float" else list(value)
        return [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind in _RECORDS:
        return _build(_RECORDS[kind], value, where)
    expected = _BASIC.get(kind)
    if expected is None:  # pragma: no cover - a field annotated with a type added here later
        raise RecordError(f"{where}: cannot check a field of type {kind}")
    ok = isinstance(value, expected) and not (isinstance(value, bool) and kind in ("int", "float"))
    if not ok:
        raise RecordError(f"{where} is {_shown(value)}, not {_WORDS[kind]}")
    return float(value) if kind == "float" else value


_BASIC = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict}
_WORDS = {"int": "a whole number", "float": "a number", "str": "a string",
          "bool": "true or false", "dict": "an object"}


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise RecordError(f"{where} is {_shown(data)}, not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecordError(f"{where} has a field {unknown[0]!r} that {cls.__name__} does not")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where} lacks the field {name!r}")
            continue
        values[name] = _check(data[name], f.type, f"{where}.{name}")
    return cls(**values)


_RECORDS = {cls.__name__: cls for cls in (
    BlockedEvent, RunningSite, Running, ConnectPhase, Ready, ProbeResult, RouteReady,
    RoutePhase, AppError, GunicornSettings, CeleryBoot, CeleryReady, CeleryConnected,
    CeleryFacts, BlockedSeen, CeleryHub, TaskMark, TaskDone, FoundRoute, AppRoutes)}


def load(cls, data, source: str):
    """The ``cls`` record in ``data`` (parsed JSON read from ``source``, a file name).

    Raises ``RecordError`` when the version is not ``RECORD_VERSION`` or a field is
    missing, unknown or of the wrong type.
    """
    if not isinstance(data, dict):
        raise RecordError(f"{source} holds {_shown(data)}, not a record")
    version = data.get("version")
    if version != RECORD_VERSION:
        raise RecordError(
            f"{source} is a record of version {version!r} but this geventprobe reads version "
            f"{RECORD_VERSION}: the workers ran another copy of geventprobe (a stale one on "
            "PYTHONPATH or in the project directory?): remove it, or run the geventprobe "
            "installed with it")
    body = {k: v for k, v in data.items() if k != "version"}
    return _build(cls, body, source)


def read(cls, path: str):
    """The ``cls`` record of the file at ``path``: ``OSError`` or ``ValueError`` when it
    cannot be read as JSON, ``RecordError`` when it is not a ``cls`` of this version."""
    with open(path) as f:
        data = json.load(f)
    return load(cls, data, os.path.basename(path))
