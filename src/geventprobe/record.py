"""The result record every renderer reads: frozen dataclasses, versioned as JSON.

``SCHEMA_VERSION`` changes whenever a field changes meaning or goes away; the
JSON Schema in ``schema/result.schema.json`` describes the serialised form. Built once
per run, by ``core/runner.run``. (What a worker sends the parent is another record,
``worker/record.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

SCHEMA_VERSION = 1


class Verdict(str, Enum):
    """What a build does under gevent."""

    OK = "OK"
    BLOCKING = "BLOCKING"
    BUSY_WAIT = "BUSY-WAIT"
    ERROR = "ERROR"
    UNAVAILABLE = "UNAVAILABLE"
    INCONCLUSIVE = "INCONCLUSIVE"
    """Measured, but the same run shows the detector could not be trusted (saturated machine,
    a baseline or calibration control that missed its class)."""
    SERIALIZED = "SERIALIZED"
    """A route of the user's app (``--route``) or a celery task (``--task``): the hub stayed
    on time, yet concurrent requests (tasks) took several times the lone one: they waited
    on each other (one connection shared by the greenlets, a pool smaller than the
    concurrency, a lock)."""
    FAILING = "FAILING"
    """A route of the user's app: requests answered 5xx, were reset or timed out; a celery
    task: tasks raised, or did not finish within their deadline while the hub ran."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of recorded samples, in microseconds."""

    count: int
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    max_us: float | None
    mean_us: float | None


@dataclass(frozen=True)
class WorkerFigures:
    """One gunicorn worker's figures; the build's figures summarise these."""

    pid: int
    """The worker process."""
    wait_factors: list[float]
    """Wall time of each wait window divided by w (1.0: the sleeps overlapped)."""
    wait_factor: float
    """Median of ``wait_factors``."""
    max_hub_lag_ms: float
    """Latest heartbeat that was due inside a wait window, in ms."""
    cpu_during_waits: float | None
    """Worker CPU-seconds per wall-second over the wait windows (psutil, from the parent)."""
    select1: LatencySummary
    """``SELECT 1`` latency measured inside the greenlets."""
    select1_qps: float
    """``SELECT 1`` queries per second over the loop."""
    cpu_per_query_us: float | None
    """Worker CPU per ``SELECT 1``, in microseconds."""
    hub_lag_timeline: list[list[float]]
    """[seconds since the first window opened, lag in ms], the worst tick per 10 ms."""
    runnable_during_waits: float | None = None
    """(CPU time + time waiting for a CPU) per wall-second over the wait windows: the CPU the
    worker wanted, whatever the machine could give (Linux schedstat; None elsewhere)."""
    sleeps_per_s_during_waits: float | None = None
    """Voluntary context switches per second over the wait windows (a spinning worker ≈ 0)."""
    connect_single_ms: float | None = None
    """One connection opened alone, ms (None: no connect phase in this record)."""
    connect_windows_ms: list[float] = field(default_factory=list)
    """Wall time of each connect window (G connects at once), ms."""
    connect_hub_lag_ms: list[float] = field(default_factory=list)
    """Latest heartbeat due inside each connect window, ms."""
    cpu_while_idle: float | None = None
    """Worker CPU-seconds per wall-second over the idle window: every connection open, none
    in use (None: no idle window in this record)."""


@dataclass(frozen=True)
class Ratios:
    """A psycopg 3 build against the psycopg2-green baseline of the same run (build / baseline)."""

    baseline: str
    p50: float | None
    p99: float | None
    qps: float | None
    cpu_per_query: float | None


@dataclass(frozen=True)
class RequestFigures:
    """HTTP requests the parent sent at the workers' probe route while the probe ran.

    Open loop at a fixed arrival rate (``http_load.py``): a latency runs from the
    moment the request was due to its last byte, so queueing behind a blocked hub
    counts. What a user of these workers would feel; the verdict does not read it.
    """

    path: str
    """The reserved route (``/__geventprobe__``); every other path goes to the app."""
    rate: float
    """Requests per second asked for, in total over the workers."""
    query: str
    """The one query each request ran, on the probe's own connections."""
    sent: int
    completed: int
    """Requests answered ``200``; only these have a latency."""
    errors: int
    error_kinds: dict[str, int]
    """``timeout``, ``connection refused``, ``HTTP 500``... → count."""
    latency: LatencySummary
    """From due time to the last byte, µs, completed requests."""
    latency_histogram: dict[str, int]
    """Lower bound of a log bucket (µs) → requests."""
    duration_s: float
    """From the first to the last due time."""
    achieved_rate: float | None
    """Requests per second actually sent."""
    generator_late_ms: float
    """How late the generator itself sent its latest request (large: it was saturated)."""


@dataclass(frozen=True)
class ConnectFigures:
    """The connect phase: connection setup measured while the heartbeat ran.

    Each worker opens one connection alone, then all G greenlets open theirs at once (the
    connect window), then close them all and reopen them at once (the reconnect rounds: what
    an app without a pool does on every request). Figures are the worst worker's.
    """

    single_ms: float
    """One connection opened alone, with nothing else running (median over workers)."""
    window_ms: float
    """Wall time of the G connects at once (worst worker, worst round)."""
    window_factor: float
    """``window_ms / single_ms``: about 1 when the connects overlap, about G when the hub
    runs them one at a time (loopback: the server's backend forks serialise them partly)."""
    max_hub_lag_ms: float
    """Latest heartbeat that was due while connecting, over every round and worker."""
    rounds: int
    """Connect windows per worker (the first plus the reconnect rounds)."""
    stall_share: float | None = None
    """The hub's longest stall inside a connect window / that window's wall time (each
    worker's median over its rounds, the worst worker): about 1 when the connects waited in
    C one after the other and the hub never ran, well under 1 when it ran between them. None
    when every window was too short to judge (``connect_min_window_ms``)."""
    rtt_ms: float = 0.0
    """Round trip the delay proxy added (``--rtt``); 0 when the server was reached directly."""
    connects: int | None = None
    """Connections opened at once in each window: the greenlets, or ``connect_min_connects``
    when there were fewer (None: one per greenlet, as in results before it)."""
    window_ms_rounds: list[float] = field(default_factory=list)
    """The worst worker's wall time of each round, ms."""


@dataclass(frozen=True)
class BuildMetrics:
    """The evidence the verdict rests on, summarised over the build's workers."""

    workers: int
    """Workers that reported."""
    greenlets: int
    wait_seconds: float
    """w, the server-side sleep of each query in a window."""
    wait_rounds: int
    wait_factor: float
    """Worst worker's median window wall time / w."""
    max_hub_lag_ms: float
    """Worst heartbeat lag inside a window, over all workers."""
    cpu_during_waits: float | None
    """Highest worker CPU-s per wall-s over the wait windows."""
    cpu_during_waits_median: float | None
    """Median over workers of the same figure."""
    machine_busy: float | None
    """Fraction of all cores busy (whole machine) during the windows."""
    select1: LatencySummary
    """All workers' ``SELECT 1`` samples pooled."""
    select1_qps: float
    """Sum over workers."""
    cpu_per_query_us: float | None
    """All workers' CPU over the loop / all queries."""
    latency_histogram: dict[str, int]
    """``SELECT 1`` latency: lower bound of a log bucket (µs) → samples."""
    vs_baseline: Ratios | None = None
    foreign_busy: float | None = None
    """Fraction of all cores busy with anything but the probed workers during the windows."""
    runnable_during_waits: float | None = None
    """Highest worker (CPU + run-queue wait) per wall-second over the wait windows."""
    sleeps_per_s_during_waits: float | None = None
    """Voluntary context switches per second of that same worker over the wait windows."""
    requests: RequestFigures | None = None
    """HTTP request latency at the probe route while the probe ran (None: no HTTP load)."""
    connect: ConnectFigures | None = None
    """The connect phase's figures (None in records made before it existed)."""
    rtt_ms: float = 0.0
    """Round trip the ``--rtt`` delay proxy added to every query; ``wait_factor`` is then the
    window over w + RTT."""
    cpu_while_idle: float | None = None
    """Highest worker CPU-seconds per wall-second over the idle window (every connection
    open, none in use; None: no idle window in this record)."""
    wait_called_off: int = 0
    """Most sleeps of one worker's window called off once BLOCKING was decided: the hub had
    not run for twice the hub-lag limit and the window had lasted twice the wait-factor
    limit (0: every sleep ran out)."""


@dataclass(frozen=True)
class Evidence:
    """One verdict rule, with the figures it was decided on."""

    rule: str
    """In the wait windows: ``wait-factor`` and ``hub-lag`` (BLOCKING), ``cpu-during-waits``
    and ``runnable-during-waits`` (BUSY-WAIT); ``cpu-while-idle`` in the idle window
    (BUSY-WAIT); ``connect-stall`` in the connect phase
    (BLOCKING); ``worker-timeout`` when gunicorn killed a worker whose hub was blocked
    longer than ``--timeout`` (value: workers killed); a route's are ``route-failing``,
    ``route-hub-lag`` and ``route-serialized`` (``core/rules.py``, ``app/route_rules.py``); a
    celery task's are ``task-stall``, ``task-hub-lag``, ``task-queue`` (BLOCKING),
    ``task-cpu-during-waits``, ``task-runnable-during-waits`` (BUSY-WAIT),
    ``task-serialized``, ``task-failing`` (``kinds/celery/task_rules.py``)."""
    value: float
    threshold: float
    fired: bool
    text: str
    """The rule in words, with its numbers."""
    phase: str = "waits"
    """When it was measured: ``waits`` (the pg_sleep windows), ``connect`` (while
    connecting), ``idle`` (every connection open, none in use), ``route`` (a burst at one
    of the user's routes), ``task`` (a celery task alone, then C at once)."""


@dataclass(frozen=True)
class BlockedStack:
    """Who blocked: one stack gevent's monitor thread caught while the hub was blocked.

    Identical stacks are counted together. ``user_frame`` is the innermost frame of the
    user's own code (not the standard library, site-packages or geventprobe), the line a
    reader should look at; ``frames`` the whole stack, outermost first.
    """

    phase: str
    """``waits``, ``connect`` or ``route <route>``."""
    count: int
    """How many times the monitor saw the hub blocked in this stack."""
    blocked_s: float
    """Sum of the blocking times it reported for them (a lower bound: it samples)."""
    frames: list[str]
    """``file:line in function``, outermost first."""
    user_frame: str | None = None
    """The innermost frame of the user's code, or None when there is none."""
    innermost: str | None = None
    """The innermost frame of all (the call that waited: ``hashlib.pbkdf2_hmac``)."""
    gil_held: bool = False
    """Most sightings found the GIL held: the stall watch's alarm fired while its helper
    thread could not run (``worker/stall_watch.py``). The call kept the GIL while it
    stalled the hub: gevent's monitor thread could not look, and a thread would not help."""


@dataclass(frozen=True)
class RouteWait:
    """Where a route's concurrent requests waited on each other: one site of the parked
    request greenlets the workers sampled during the burst (``core/waits.py``)."""

    kind: str
    """``pool`` (a pool's checkout), ``connection`` (a driver connection's lock), ``lock``
    (a primitive of the app's own) or ``other``."""
    where: str | None
    """The user's line they waited at: ``app.py:34 in application: with engine.connect()``."""
    wait: str
    """The library wait they sat in: ``sqlalchemy/util/queue.py:199 in get``."""
    most: int
    """Most requests waiting there at once in one worker."""
    working: int
    """Requests of that worker working meanwhile (on I/O or a timer): the holders."""


@dataclass(frozen=True)
class RouteCpu:
    """What sharing the CPU explains of a route's burst (issue 24). A gevent worker runs one
    request's Python at a time: C requests that each need a few ms of CPU take about C times
    as long together, whether or not they share anything. Read from each worker's main
    thread (``/proc/<pid>/schedstat``: the CPU it ran and the time it waited runnable for a
    core) when the burst was due and as each answer ended."""

    busy_ms: float
    """The busiest worker's main thread, running or waiting for a core, from the burst's due
    time to its p90 answer: the part of that latency sharing the CPU explains."""
    ran_ms: float
    """Of ``busy_ms``, running."""
    waited_ms: float
    """Of ``busy_ms``, runnable but waiting for a core (other processes had the CPUs)."""
    unexplained_ms: float
    """Burst p90 minus ``busy_ms``: the time the CPU does not explain (what SERIALIZED
    judges against the lone request)."""
    cpu_per_request_ms: float | None = None
    """The workers' CPU over the whole burst per request they served in it."""
    lone_cpu_ms: float | None = None
    """The CPU the lone request cost the worker that served it."""
    note: str | None = None
    """When the CPU explains what would otherwise read as SERIALIZED: in words, with the
    figures (a note, not a verdict)."""


@dataclass(frozen=True)
class RouteWarmUp:
    """Before a route's lone request every worker serves it once (issue 25): a worker's first
    request pays for what the app does lazily (Django imports its URLconf then), so the
    measured requests are about the route. What the warm-up itself stalled is what each
    worker's first users wait for after every deploy."""

    requests: int
    """Warm-up requests sent (rounds of two per worker at once)."""
    workers_warmed: int
    """Workers that served the route (each marks its first warm-up request)."""
    workers: int
    """Workers there were."""
    seconds: float
    """From the first warm-up request to its last answer."""
    max_hub_lag_ms: float
    """Latest heartbeat in any worker meanwhile."""
    statuses: dict[str, int] = field(default_factory=dict)
    blocked_by: list[BlockedStack] = field(default_factory=list)
    """Who blocked the hub meanwhile (gevent's monitor thread, the stall watch)."""
    note: str | None = None
    """When the warm-up stalled a hub for ``route_hub_lag_ms`` or more: the stall, who
    blocked, and how to keep it from users."""


@dataclass(frozen=True)
class RouteResult:
    """One route of the user's app (``--route``): a lone request, then a concurrent burst."""

    route: str
    """``GET /path`` or ``POST /path``."""
    verdict: Verdict
    """OK, BLOCKING, SERIALIZED, FAILING or ERROR."""
    concurrency: int
    """Concurrent requests per worker in the burst."""
    lone_ms: float | None
    """Latency of the request sent alone (median over workers)."""
    lone_status: int | None
    """Its HTTP status (None: no answer)."""
    burst: LatencySummary
    """Burst latencies from when each request was due, µs (answered requests)."""
    burst_factor: float | None
    """Burst p90 / lone latency: about 1 when the requests overlap, about C when they run one
    at a time."""
    statuses: dict[str, int]
    """HTTP status (or ``reset``, ``timeout``) → count, over the burst."""
    max_hub_lag_ms: float
    """Latest heartbeat in any worker during the burst."""
    server_connections: int | None
    """Most TCP connections to the server held during the burst (psutil) by the worker that
    served the most requests of it."""
    evidence: list[Evidence]
    cause: str | None = None
    advice: str | None = None
    first_error: str | None = None
    """The exception the workers logged most during the lone request and the burst, as
    ``type: message`` (a traceback's last line), else the first line gunicorn marked as an
    error (redacted)."""
    blocked_by: list[BlockedStack] = field(default_factory=list)
    """Stacks the monitor thread caught during the burst (BLOCKING: who blocked)."""
    duration_s: float = 0.0
    cause_kind: str | None = None
    """What the cause rests on, for tools: a known error (``pool-timeout``,
    ``shared-connection``, ``django-thread-sharing``, ``master-connection``...), ``error``
    (another exception), where the requests waited (``pool``, ``shared-connection``,
    ``lock``, ``other``), or who blocked (``early-binding``, ``gil-held``, ``driver``,
    ``blocking-call``); None when the evidence named nothing."""
    error_at: str | None = None
    """FAILING: the user's frame that raised ``first_error`` (``app.py:29 in application:
    with pool.connection() as conn``); None when every frame was a library's."""
    waited_at: list[RouteWait] = field(default_factory=list)
    """SERIALIZED: where the requests waited, busiest site first."""
    note: str | None = None
    """What a reader must know beside the verdict: the app answered a redirect or a refusal
    (3xx, 401, 403...), so the figures are those of that answer, not of the route's work."""
    body_bytes: int | None = None
    """Size of the lone request's answer, read to its last byte (None: no answer)."""
    cpu: RouteCpu | None = None
    """What sharing the workers' CPU explains of the burst (None: not measured)."""
    warm_up: RouteWarmUp | None = None
    """The requests that warmed every worker before the lone one (None: none sent)."""

    @property
    def shown(self) -> str:
        """The route as tables and headlines show it: cut to 60 characters with ``…`` (a long
        query string would push every other column out; the record keeps it whole)."""
        return self.route if len(self.route) <= 60 else self.route[:59] + "…"


@dataclass(frozen=True)
class TaskBatch:
    """Tasks of a celery worker sent at once through the broker (one alone, or C), and what
    became of them. A task's **queue** time runs from when it was sent to when its greenlet
    began (``task_prerun``): the broker, the consumer taking it off the broker and the pool;
    its **run** time from then to ``task_postrun``. A blocked hub shows only as queue time:
    the consumer runs on the same hub, while each task's own run stays short."""

    size: int
    """Tasks sent."""
    finished: int
    """Tasks that finished (in any state) before the deadline."""
    failed: int
    """Finished in another state than SUCCESS (an exception, a retry)."""
    wall_s: float | None
    """From the first sent to the last finished (None: not all finished)."""
    queue_p50_s: float | None
    queue_max_s: float | None
    run_p50_s: float | None
    run_p90_s: float | None
    run_max_s: float | None
    celery_runtime_max_s: float | None
    """The longest runtime celery itself reported (``task_success``: what its events and
    Flower show), beside ours."""
    overlap: float | None
    """Sum of the run times / the span they cover: about C when the tasks ran side by side,
    1 when one after the other."""
    peak: int
    """Most tasks running at the same moment."""
    hub_lag_ms: float | None
    """Latest heartbeat tick of the worker due during the batch (None: the heartbeat never
    ran)."""
    cpu_per_s: float | None = None
    """The worker's CPU-s per wall-s over the whole batch (receiving, connecting: not a
    busy-wait figure)."""
    wait_cpu_per_s: float | None = None
    """Probe tasks: the worker's CPU-s per wall-s while every task of the batch only waited
    on the server (its ``pg_sleep``): the BUSY-WAIT figure (healthy ≈ 0.05–0.09)."""
    wait_runnable: float | None = None
    """Probe tasks: share of that time the worker was on a CPU or queued for one."""
    wait_sleeps_per_s: float | None = None
    """Probe tasks: how often a second the worker went to sleep in that time."""
    server_connections: int | None = None
    """The user's tasks: most TCP connections the worker held to the server during the
    batch (None: not counted, e.g. a unix socket)."""


@dataclass(frozen=True)
class TaskStall:
    """A task the worker never started, or never finished, within its deadline: what the
    worker was doing then (faulthandler's dump of its main thread, taken from C, so it
    comes even while the hub is held in C)."""

    kind: str
    """``never-ready`` (the worker never said ready), ``never-started`` (sent, none began)
    or ``stalled`` (began, did not finish)."""
    batch: str | None
    """``warm-up``, ``alone`` or ``at once`` (None: never ready)."""
    waited_s: float
    why: str
    """What ended the wait: ``none started`` (none began within ``task_start_timeout_s``),
    ``hub held`` (the heartbeat silent that long), ``deadline``, ``exited``."""
    sent: int
    received: int
    """Taken off the broker by the consumer (celery's ``task_received``)."""
    started: int
    finished: int
    hub_silent_s: float | None
    """How long the heartbeat had not ticked when geventprobe gave up; None: it never ran
    at all (the probe's greenlet never got the hub)."""
    stack: list[str] = field(default_factory=list)
    """The main thread's stack (the hub's, under gevent), ``file:line in function``,
    outermost first."""
    user_frame: str | None = None
    """The innermost frame of that stack in the user's own code."""
    stopped: str | None = None
    """How the worker was stopped afterwards (``SIGTERM``; ``SIGKILL after ignoring SIGTERM
    for 1 s``)."""


@dataclass(frozen=True)
class TaskResult:
    """One task of a celery worker (``run --celery``): sent alone, then C at once, through
    the broker. The first is geventprobe's own probe task (``geventprobe.pg_sleep``: each
    opens a connection with the app's driver and sleeps w on the server), whose verdict is
    the worker's; then each ``--task``."""

    task: str
    """The task's name."""
    probe: bool
    """True for geventprobe's probe task."""
    verdict: Verdict
    """OK, BLOCKING, BUSY-WAIT, SERIALIZED, FAILING (or ERROR: the probe task failed)."""
    concurrency: int
    """Tasks sent at once in the second batch."""
    call: str
    """How it was called: ``tasks.charge(1, retry=False)`` (redacted)."""
    alone: TaskBatch | None
    at_once: TaskBatch | None
    evidence: list[Evidence]
    cause: str | None = None
    advice: str | None = None
    first_error: str | None = None
    """The first failed task's exception (``Type: message``) and the user's line that raised
    it."""
    blocked_by: list[BlockedStack] = field(default_factory=list)
    """Stacks gevent's monitor thread caught holding the hub during the task's batches."""
    stall: TaskStall | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class BuildResult:
    """One build's verdict, why, and how to fix it."""

    build: str
    description: str
    baseline: bool
    """True for psycopg2 references, which must get ``expected``."""
    expected: str | None
    verdict: Verdict
    cause: str | None
    """Why, in words computed from the facts (None when OK)."""
    advice: str | None
    """The fix (None when OK)."""
    evidence: list[Evidence]
    facts: dict
    """What the first worker reported about itself (driver, wait function, patching)."""
    metrics: BuildMetrics | None
    workers: list[WorkerFigures]
    error: str | None = None
    install: str | None = None
    """For UNAVAILABLE: the command that makes the build importable."""
    worker_timeouts: int = 0
    """Workers the gunicorn master killed for a blocked hub (``WORKER TIMEOUT``)."""
    duration_s: float = 0.0
    versions: dict[str, str] | None = None
    """Version matrix: the package versions this row's isolated environment was made with
    (``{"psycopg": "3.1.12", "gevent": "26.9.0", ...}``); None outside a matrix."""
    environment: str | None = None
    """Version matrix: the cached environment it ran in (a ``RunResult.matrix`` name)."""
    blocked_by: list[BlockedStack] = field(default_factory=list)
    """Who blocked: stacks gevent's monitor thread caught in the workers during the measured
    phases (empty when the hub was never blocked past its threshold)."""
    routes: list[RouteResult] = field(default_factory=list)
    """``run --app --route``: each route's verdict, in the order asked."""
    tasks: list[TaskResult] = field(default_factory=list)
    """``run --celery``: the probe task (the worker's verdict), then each ``--task``."""
    timings: dict[str, float] = field(default_factory=dict)
    """Where this build's time went, seconds per phase: ``boot`` (the previous build's
    gunicorn exits meanwhile), ``reap previous`` (what was left of that), ``probe`` (and
    within it ``connect``, ``waits``, ``select1``), ``requests``, ``routes``."""


@dataclass(frozen=True)
class ControlOutcome:
    """What one control got, with the figures it was judged on."""

    control: str
    description: str
    build: str
    expected: str
    got: str
    """The verdict it got (``UNAVAILABLE`` when its build does not import here)."""
    passed: bool | None
    """None when the control could not run."""
    wait_factor: float | None
    max_hub_lag_ms: float | None
    cpu_during_waits: float | None
    foreign_busy: float | None
    """Fraction of the cores other programs kept busy while it measured."""
    margin: float | None
    """How far from its threshold the deciding figure was (>1: on the right side)."""
    evidence: list[Evidence]
    error: str | None = None
    runnable_during_waits: float | None = None
    """Worker (CPU + run-queue wait) per wall-second while the server slept."""
    connect_stall_share: float | None = None
    """Share of a connect window the hub stalled for (``ConnectFigures.stall_share``)."""


@dataclass(frozen=True)
class Calibration:
    """The outcome of every control, and whether the detector can be trusted here."""

    outcomes: list[ControlOutcome]
    passed: bool
    """Every control that ran got its class, and each class had a control that ran."""
    saturated: bool
    """The machine was too busy for any verdict to be trusted."""
    reason: str
    """One line: why it passed, failed or was inconclusive."""
    duration_s: float


@dataclass(frozen=True)
class MatrixEnv:
    """One isolated environment of a version matrix (``run --psycopg/--gevent``, ``bisect``)."""

    name: str
    """Its directory name in the cache (``BuildResult.environment`` points here)."""
    label: str
    """The versions it was made for, in words (``psycopg 3.1.12 · gevent 26.9.0``)."""
    versions: dict[str, str]
    """Package → the version asked for (the varied ones and those held to ours)."""
    varied: list[str]
    """The packages the user asked to vary (``psycopg``, ``gevent``)."""
    builds: list[str]
    """The builds that were to run in it."""
    requirements: list[str]
    """What the installer was asked for."""
    installed: dict[str, str]
    """Distribution → version, as installed."""
    installer: str
    """``uv`` or ``pip``."""
    cached: bool
    """True when the environment was reused from the cache as it was."""
    seconds: float
    """Time spent making it ready (about 0 when cached)."""
    path: str | None
    """Where it is; None when it could not be made."""
    python: str
    """The Python it was made for (implementation, version, platform)."""
    missing: dict[str, str] = field(default_factory=dict)
    """Build → the installer's reason its package did not install (UNAVAILABLE)."""
    error: str | None = None
    """Why the environment could not be made at all (every build UNAVAILABLE)."""


@dataclass(frozen=True)
class DelayProxyFigures:
    """``--rtt``: the loopback delay proxy between the workers and the server, as measured."""

    rtt_ms: float
    """Round trip asked for: each direction is delayed by half of it."""
    upstream: str
    """Where it forwarded to (``127.0.0.1:5432``, ``/run/postgresql/.s.PGSQL.5432``)."""
    connections: int
    """Client connections it carried during the run."""
    chunks: int
    """Chunks of bytes it forwarded (both directions)."""
    extra_delay_us: LatencySummary
    """How late each chunk left beyond its due time (read time + RTT/2): the proxy's own
    added delay, µs."""


@dataclass(frozen=True)
class RunResult:
    """A whole ``geventprobe run``."""

    schema_version: int
    tool_version: str
    started_at: str
    """ISO 8601, UTC."""
    duration_s: float
    command: list[str]
    """The command line, secrets redacted."""
    preload: bool
    profile: dict
    """Workload and thresholds used, and the file they came from."""
    environment: dict
    """The parent's machine and installed versions (the workers' own are in each build's facts)."""
    server: dict
    builds: list[BuildResult]
    summary: str
    """The verdict sentence and the exit code, in one line: ``<verdict>; exit N``."""
    exit_code: int
    verdict: str = ""
    """The verdict sentence alone, in the words of what was probed; the report sets the exit
    code beside it (``summary`` joins them). Empty in a record written before it was kept
    apart (an older geventprobe, same schema): the report then shows ``summary``."""
    notes: list[str] = field(default_factory=list)
    """Warnings a reader must see (unstable figures, missing controls...)."""
    calibration: Calibration | None = None
    """The controls' outcome when calibration ran (``run --calibrate``, ``calibrate``)."""
    matrix: list[MatrixEnv] | None = None
    """The version matrix's environments, one per version set; None for a run in
    geventprobe's own environment."""
    app: dict | None = None
    """``run --app``: the user's app, gunicorn config and the settings gunicorn really used
    (worker class and whether geventprobe forced gevent, workers, preload, what it overrode);
    None for the built-in harness."""
    proxy: DelayProxyFigures | None = None
    """``--rtt``: the delay proxy the workers reached the server through; None without."""
    timings: dict[str, float] = field(default_factory=dict)
    """Where the run's time went, seconds: ``server`` (from the start until the server was
    ready), ``boots`` (the built-in builds: until every build's workers had said whether
    its driver imports) or ``imports`` (a target whose builds are checked apart: waited
    for the checks after the server was up), ``calibration``, then ``build <name>`` for
    each build (its phases are in its ``timings``)."""

    def __repr__(self) -> str:
        # Short: pytest prints it beside a failed ``assert result.ok`` (explain() has the rest).
        shown = ", ".join(f"{k!r}: {v.value}" for k, v in self.verdicts.items())
        return f"RunResult(exit_code={self.exit_code}, verdicts={{{shown}}})"

    @property
    def ok(self) -> bool:
        """True when the run exits 0: every build under test (your app and each route, your
        celery worker and each task) is OK, or its verdict is one ``fail_on`` leaves out."""
        return self.exit_code == 0

    @property
    def verdicts(self) -> dict[str, Verdict]:
        """Each build's verdict by its name (your app's: ``module:callable``), each route's
        by ``METHOD /path`` and each task's by its name, in the report's order."""
        out: dict[str, Verdict] = {}
        for b in self.builds:
            out[b.build] = b.verdict
            out.update((r.route, r.verdict) for r in b.routes)
            out.update((t.task, t.verdict) for t in b.tasks)
        return out

    def explain(self, verbose: bool = False) -> str:
        """The report as the terminal words it, without colour at 100 columns (what
        ``geventprobe run`` prints into a pipe): the table, each finding's evidence, cause and
        fix, and the verdict sentence; ``verbose``: every figure, as ``-v``."""
        from geventprobe.report.formats.terminal import plain_text  # renderers read records

        return plain_text(self, verbose)
