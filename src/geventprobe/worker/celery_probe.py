"""The probe inside a celery worker under test: celery's signals, our queue, the heartbeat.

``celery_watch`` calls ``connect()`` once ``celery.signals`` has loaded in the worker
process; it imports nothing. From then on, through celery's own signals (the ones a
gevent worker sends; ``worker_process_init`` is not one of them, docs/celery.md):

- ``worker_init``: the phase changes, and the probe task ``geventprobe.pg_sleep`` is
  registered on the worker's app, before the consumer reads the registry;
- ``celeryd_after_setup``: the worker consumes from our queue alone
  (``GEVENTPROBE_CELERY_QUEUE``, named per run). The queues it would have consumed are
  noted, never consumed from, purged or declared;
- ``worker_ready``: ``celery-ready-<pid>.json`` is written in the signal itself (so a
  worker whose hub never runs still says it got there), then a greenlet starts the
  heartbeat (``probe.Heartbeat``), gevent's monitor thread (``monitor.Monitor``: who held
  the hub), the connect phase (``probe.connect_phase``, with the driver the app imported)
  and rewrites ``hub-<pid>.json`` every ``HUB_WRITE_S``;
- ``task_received`` / ``task_prerun`` / ``task_success`` / ``task_failure`` /
  ``task_postrun``: ``received-``, ``started-`` and ``task-<id>.json`` per task, with
  celery's own runtime beside ours.

The parent asks for every greenlet's stack by creating ``dump`` in the run dir; the
threads' stacks come from faulthandler on ``celery_watch.stack_signal()`` (C level:
they come even while the hub is held in C). Everything reaches the parent as files
(``record.py``'s typed, versioned celery records), never through stdout or the log.
Nothing here runs unless ``GEVENTPROBE_CELERY_RUN_DIR`` is set, and no hook may break the
worker: an error of ours is noted and the worker goes on as it would have.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

RUN_DIR_ENV = "GEVENTPROBE_CELERY_RUN_DIR"
QUEUE_ENV = "GEVENTPROBE_CELERY_QUEUE"
WORKLOAD_ENV = "GEVENTPROBE_CELERY_WORKLOAD"
#: JSON: the celery settings the parent gave the worker through its environment (the run's
#: broker, and result backend with the embedded broker), which must hold in the worker.
SETTINGS_ENV = "GEVENTPROBE_CELERY_SETTINGS"
PROBE_TASK = "geventprobe.pg_sleep"
#: How often the worker rewrites ``hub-<pid>.json`` (s).
HUB_WRITE_S = 0.2
#: A heartbeat tick at least this late is kept, with when it was due (s).
LATE_TICK_S = 0.002
DEFAULT_WORKLOAD = {
    "heartbeat_ms": 2.0, "greenlets": 16, "connect_rounds": 1, "connect_timeout_s": 10,
    "statement_timeout_ms": 60000, "wait_seconds": 0.2, "monitor_ms": 50.0,
}

_connected = False
_signals: dict[str, float] = {}
_received: dict[str, float] = {}
_started: dict[str, float] = {}
_runtime: dict[str, float] = {}
_failed: dict[str, tuple[str, str | None]] = {}
_windows: dict[str, dict] = {}
_user_queues: tuple[str, ...] = ()
_restored: list[str] = []
_concurrency = 0
_pool_time_limit = None
_pool_facts: dict = {}
_driver = None
_heartbeat = None
_monitor = None
_hub_started = 0.0
_TRACER = None  # worker/running.py's Tracer, made by the first probe task


def run_dir() -> str:
    return os.environ[RUN_DIR_ENV]


def workload() -> dict:
    import json

    out = dict(DEFAULT_WORKLOAD)
    out.update(json.loads(os.environ.get(WORKLOAD_ENV) or "{}"))
    return out


def _write(name: str, rec) -> None:
    from geventprobe.worker import record

    record.write(os.path.join(run_dir(), name), rec)


def _guarded(name):
    """Wrap a receiver: note it fired; an error of ours must never reach celery."""
    def wrap(func):
        def receiver(*args, **kwargs):
            if name:
                _signals.setdefault(name, time.monotonic())
            try:
                func(*args, **kwargs)
            except Exception as exc:
                from geventprobe.worker import celery_watch

                celery_watch._note_error(f"{name or func.__name__} receiver", exc)
        receiver.__name__ = func.__name__
        return receiver
    return wrap


def connect() -> None:
    """Connect our receivers to celery's signals (once ``celery.signals`` has loaded)."""
    global _connected
    if _connected or not os.environ.get(RUN_DIR_ENV):
        return
    _connected = True
    signals = sys.modules["celery.signals"]
    for name in ("import_modules", "celeryd_init", "worker_process_init", "worker_shutdown"):
        getattr(signals, name).connect(_guarded(name)(_nothing), weak=False,
                                       dispatch_uid=f"geventprobe-{name}")
    hooks = {"worker_init": _on_worker_init, "celeryd_after_setup": _on_after_setup,
             "worker_ready": _on_ready, "worker_shutting_down": _on_shutting_down}
    for name, func in hooks.items():
        getattr(signals, name).connect(_guarded(name)(func), weak=False,
                                       dispatch_uid=f"geventprobe-{name}")
    tasks = {"task_received": _on_received, "task_prerun": _on_prerun,
             "task_success": _on_success, "task_failure": _on_failure,
             "task_postrun": _on_postrun}
    for name, func in tasks.items():
        getattr(signals, name).connect(_guarded(None)(func), weak=False,
                                       dispatch_uid=f"geventprobe-{name}")


def _nothing(*_args, **_kwargs) -> None:
    """A receiver that only notes that the signal fired (``_guarded`` does)."""


def _on_worker_init(sender=None, **_kwargs) -> None:
    """Before the pool and the consumer start: our probe task joins the worker's app."""
    from geventprobe.worker import celery_watch

    celery_watch.set_phase("worker_init")
    _restore_settings()
    app = sender.app
    app.task(name=PROBE_TASK, bind=True, ignore_result=True, shared=False)(_pg_sleep)


def _restore_settings() -> None:
    """The run's broker (and result backend) again, if the worker's command line changed
    them: ``celery -b URL`` and ``--result-backend URL`` set ``CELERY_BROKER_URL`` and
    ``CELERY_RESULT_BACKEND`` as the program starts, after the parent set them. celery reads
    them when it connects, after this signal, so the worker never touches the user's broker.
    """
    import json

    wanted = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    for name, value in sorted(wanted.items()):
        if os.environ.get(name) != value:
            os.environ[name] = value
            _restored.append(name)


def _on_after_setup(sender=None, instance=None, **_kwargs) -> None:
    """The worker's queues are set: from now on it consumes from ours alone."""
    global _user_queues
    from kombu import Exchange, Queue

    name = os.environ[QUEUE_ENV]
    queues = instance.app.amqp.queues
    _user_queues = tuple(sorted(queues.consume_from))
    # An exchange of our own too: binding our queue to theirs would change their broker.
    queues.add(Queue(name, Exchange(name, type="direct"), routing_key=name))
    queues.select([name])


def _on_ready(sender=None, **_kwargs) -> None:
    """The consumer is ready: say so now, then start the probe in a greenlet."""
    from geventprobe.worker import celery_watch

    celery_watch.set_phase("ready")
    global _concurrency, _pool_time_limit
    ready = _ready_record(sender)
    _concurrency = ready.concurrency
    _pool_time_limit = getattr(sender.pool, "timeout", None)  # the worker's --time-limit
    _write(f"celery-ready-{os.getpid()}.json", ready)
    if not ready.facts.get("pool_is_gevent"):
        return  # not a -P gevent worker: the parent says so; nothing of gevent to start here
    import gevent

    gevent.spawn(_probe_main)


def _ready_record(consumer):
    import platform

    from geventprobe.worker import record

    pool = consumer.pool
    # By module name: importing celery's gevent pool would import gevent into a worker that
    # does not run it.
    _pool_facts["pool_is_gevent"] = any(c.__module__ == "celery.concurrency.gevent"
                                        for c in type(pool).__mro__)
    # celery's gevent pool enforces no soft time limit (its on_apply drops soft_timeout):
    # the parent says so of a task that outran one.
    _pool_facts["soft_time_limits"] = {
        name: float(task.soft_time_limit) for name, task in consumer.app.tasks.items()
        if not name.startswith("celery.") and getattr(task, "soft_time_limit", None)}
    facts, error = _facts()
    facts.update(_pool_facts)  # also when collecting the rest failed
    concurrency = getattr(consumer.controller, "concurrency", None) or getattr(pool, "limit", 0)
    consumes = sorted(getattr(consumer.app.amqp.queues, "consume_from", {}) or ())
    return record.CeleryReady(
        pid=os.getpid(), at=time.monotonic(), hostname=str(consumer.hostname),
        pool=f"{type(pool).__module__}.{type(pool).__qualname__}",
        concurrency=int(concurrency or 0), consumes=consumes, user_queues=list(_user_queues),
        tasks=sorted(n for n in consumer.app.tasks if not n.startswith("celery.")),
        signals=dict(_signals),
        versions={"celery": _version("celery"), "kombu": _version("kombu"),
                  "gevent": facts.get("gevent"), "greenlet": facts.get("greenlet"),
                  "python": platform.python_version()},
        facts=facts, error=error)


class _CelerySource:
    """The probe's source (``probe.collect_facts``) in a celery worker: how the app got its
    driver, as ``celery_watch`` saw it from the process's first line."""

    def import_facts(self, worker=None) -> dict:
        from geventprobe.worker import celery_watch

        return dict(celery_watch.facts(), build="celery", import_error=None, mode="celery")

    def driver(self):
        """(driver module, import error)."""
        return _driver_module()

    def set_up(self) -> None:
        """Nothing: the worker has set itself up as it always does."""


CELERY = _CelerySource()


def _facts() -> tuple[dict, str | None]:
    """``probe.collect_facts`` (the driver, its wait function, patching, versions) with
    ``celery_watch``'s import facts; and an error, if any."""
    from geventprobe.worker import probe

    try:
        facts = probe.collect_facts(CELERY)
    except Exception as exc:
        return {}, f"collecting the facts failed: {type(exc).__name__}: {exc}"
    hidden = sorted(m for m in ("psycopg", "psycopg2")
                    if m in sys.modules and sys.modules[m] is None)
    if hidden:
        facts["blocked_modules"] = hidden
    facts["worker_process_init_receivers"] = _receivers("worker_process_init")
    facts["settings_restored"] = list(_restored)
    facts.update(_pool_facts)
    return facts, None


def _receivers(name: str) -> list[str]:
    """The app's receivers of celery signal ``name`` (``file:line in function``), ours left
    out: a receiver of a signal this pool never sends is code that never runs."""
    import weakref

    from geventprobe.worker import monitor

    signal = getattr(sys.modules.get("celery.signals"), name, None)
    out = []
    for entry in list(getattr(signal, "receivers", None) or ()):
        func = entry[1] if isinstance(entry, tuple) and len(entry) > 1 else entry
        if isinstance(func, weakref.ReferenceType):  # connected weak (celery's default)
            func = func()
        code = getattr(func, "__code__", None)
        if code is None or "geventprobe" in code.co_filename:
            continue
        out.append(f"{monitor.short(code.co_filename)}:{code.co_firstlineno} in "
                   f"{getattr(func, '__name__', '?')}")
    return out


def _version(module: str) -> str | None:
    return getattr(sys.modules.get(module), "__version__", None)


def _driver_module():
    """The driver the app imported (psycopg first), else one we import now (phase probe).

    A ``sys.modules[name] = None`` entry (an app that hides a driver) counts as absent.
    """
    import importlib

    from geventprobe.worker import celery_watch, import_watch

    for name in ("psycopg", "psycopg2"):
        if import_watch.loaded(name):
            if name == "psycopg2":
                importlib.import_module("psycopg2.extensions")
            return sys.modules[name], None
    celery_watch.set_phase("probe")
    errors = []
    try:
        for name in ("psycopg", "psycopg2"):
            try:
                module = importlib.import_module(name)
                if name == "psycopg2":
                    importlib.import_module("psycopg2.extensions")
                return module, None
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        celery_watch.set_phase("ready")
    return None, "no PostgreSQL driver imports in the worker (" + "; ".join(errors) + ")"


def _probe_main() -> None:
    """In a greenlet: heartbeat, monitor, the connect phase, then the hub file forever."""
    global _heartbeat, _monitor, _driver, _hub_started
    import gevent

    from geventprobe.worker import probe, record
    from geventprobe.worker.monitor import Monitor

    wl = workload()
    _heartbeat = probe.Heartbeat(float(wl["heartbeat_ms"]) / 1000)
    _hub_started = time.monotonic()
    gevent.spawn(_heartbeat.run)
    gevent.spawn(_hub_writer)
    gevent.sleep(0.02)  # the heartbeat ticks before anything is measured
    if float(wl.get("monitor_ms") or 0) > 0:
        try:
            _monitor = Monitor(float(wl["monitor_ms"]) / 1000).start()
        except Exception as exc:
            from geventprobe.worker import celery_watch

            celery_watch._note_error("gevent's monitor thread", exc)
    pid = os.getpid()
    # C connections at once, as the tasks will open them: never more than the worker runs
    # at once, nor than the run's greenlets (the server was sized for those).
    greenlets = min(int(wl["greenlets"]), _concurrency or int(wl["greenlets"]))
    try:
        module, error = _driver_module()
        if error:
            raise ImportError(error)
        _driver = probe.Driver(module, wl)
        conns, phase = probe.connect_phase(_driver, greenlets, int(wl["connect_rounds"]),
                                           probe.Rules(wl, _heartbeat),
                                           int(wl.get("connect_min_connects", 0)))
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        connected = record.CeleryConnected(pid=pid, greenlets=greenlets, connect=phase)
    except Exception as exc:
        connected = record.CeleryConnected(pid=pid, greenlets=greenlets,
                                           error=f"{type(exc).__name__}: {exc}")
    _write(f"connected-{pid}.json", connected)


def _hub_record():
    from geventprobe.worker import record

    hb = _heartbeat
    late = [[due, lag] for due, lag in zip(list(hb.expected), list(hb.lag))
            if lag >= LATE_TICK_S]
    last = hb.expected[-1] + hb.lag[-1] if hb.expected else _hub_started
    return record.CeleryHub(
        pid=os.getpid(), period=hb.period, started=_hub_started, ticks=len(hb.lag),
        last_tick=last, late=late, written=time.monotonic(), blocked=_blocked_groups())


def _blocked_groups() -> list:
    """The monitor's events, one entry per distinct stack with every look that found it (a
    hub held for 3 s at one line is 60 looks of a 50 ms monitor: one stack, 60 times)."""
    from geventprobe.worker import record

    groups: dict[tuple, tuple[list, list, int | None]] = {}
    for event in list(_monitor.events) if _monitor is not None else ():
        times, seconds, _ = groups.setdefault(tuple(event.frames), ([], [], event.user))
        times.append(event.t)
        seconds.append(event.s)
    return [record.BlockedSeen(frames=list(frames), user=user, times=times, seconds=seconds)
            for frames, (times, seconds, user) in groups.items()]


def _hub_writer() -> None:
    """Rewrite ``hub-<pid>.json`` every HUB_WRITE_S; answer each request of the parent once."""
    import gevent

    pid = os.getpid()
    answered: set[str] = set()
    while True:
        try:
            _write(f"hub-{pid}.json", _hub_record())
            for request in ("dump", "facts"):
                if request not in answered and os.path.exists(os.path.join(run_dir(), request)):
                    answered.add(request)
                    _answer(request, pid)
        except Exception as exc:
            from geventprobe.worker import celery_watch

            celery_watch._note_error("the hub file", exc)
            return
        gevent.sleep(HUB_WRITE_S)


def _answer(request: str, pid: int) -> None:
    """The parent's request: every greenlet's stack, or the facts once the tasks ran."""
    from geventprobe.worker import record

    if request == "facts":
        facts, _ = _facts()
        _write(f"facts-{pid}.json", record.CeleryFacts(pid=pid, at=time.monotonic(), facts=facts))
        return
    from gevent import util

    path = os.path.join(run_dir(), f"greenlets-{pid}.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(util.format_run_info(thread_stacks=False)))
    os.replace(path + ".tmp", path)


def _on_shutting_down(**_kwargs) -> None:
    """The worker was told to stop: the last hub file, with everything until now."""
    if _heartbeat is not None:
        _write(f"hub-{os.getpid()}.json", _hub_record())


def _pg_sleep(self, seconds: float = 0.2) -> float:
    """The probe task: open a connection with the app's driver, ``pg_sleep``, close it."""
    global _driver, _TRACER
    from geventprobe.worker import probe, running

    if _TRACER is None:
        _TRACER = running.Tracer()
    if _driver is None:  # a task before the connect phase set it up
        module, error = _driver_module()
        if error:
            raise ImportError(error)
        _driver = probe.Driver(module, workload())
    t0 = time.monotonic()
    conn = _driver.connect()
    try:
        t1 = time.monotonic()
        before = _TRACER.begin()  # who runs on the hub while this task only waits
        try:
            _driver.query(conn.cursor(), "SELECT pg_sleep(%s)", (float(seconds),))
        finally:
            ran = _TRACER.end(before)
        t2 = time.monotonic()
    finally:
        conn.close()
    _windows[self.request.id] = {"connect": [t0, t1], "query": [t1, t2], "running": ran}
    return float(seconds)


def _on_received(request=None, **_kwargs) -> None:
    from geventprobe.worker import record

    now = time.monotonic()
    _received[request.id] = now
    _write(f"received-{request.id}.json",
           record.TaskMark(task_id=request.id, what="received", at=now))


def _on_prerun(task_id=None, **_kwargs) -> None:
    from geventprobe.worker import record

    now = _started[task_id] = time.monotonic()
    _write(f"started-{task_id}.json", record.TaskMark(task_id=task_id, what="started", at=now))


def _on_success(sender=None, runtime=None, **_kwargs) -> None:
    if runtime is not None:
        _runtime[sender.request.id] = float(runtime)


def _on_failure(task_id=None, exception=None, traceback=None, **_kwargs) -> None:
    """The exception as its type and message (its last line, as a traceback ends), and the
    innermost frame of the user's own code that raised it."""
    import traceback as tb

    from geventprobe.worker import monitor

    text = "".join(tb.format_exception_only(type(exception), exception)).strip()
    origin = None
    if traceback is not None:
        for fr in reversed(tb.extract_tb(traceback)):
            if monitor.is_user_code(fr.filename):
                origin = monitor.frame_text(fr)
                break
    if task_id not in _started:  # after task_postrun (a hard time limit): it is written
        return
    _failed[task_id] = (text.splitlines()[-1] if text else type(exception).__name__, origin)


def _on_postrun(task_id=None, task=None, state=None, **_kwargs) -> None:
    from geventprobe.worker import record

    now = time.monotonic()
    error, origin = _failed.pop(task_id, (None, None))
    windows = _windows.pop(task_id, None) or {}
    started = _started.pop(task_id, now)
    if state is None and error is None:
        state, error = "FAILURE", _cut_short(task, now - started)
    _write(f"task-{task_id}.json", record.TaskDone(
        task_id=task_id, name=getattr(task, "name", None) or "(unnamed)", pid=os.getpid(),
        received=_received.pop(task_id, None), started=started,
        finished=now, state=state, celery_runtime=_runtime.pop(task_id, None),
        error=error, error_origin=origin, connect=windows.get("connect"),
        query=windows.get("query"), running=windows.get("running")))


def _cut_short(task, ran: float) -> str:
    """Why celery's trace ended with no state: under -P gevent its hard time limit is a
    gevent Timeout through the task, so ``task_postrun`` comes with state None and
    ``task_failure`` (TimeLimitExceeded) only after it, if at all (celery 5.7.0: 4 ms after,
    measured).
    The limit is celery's own: the message's, else the task's (its ``time_limit``, or the
    app's ``task_time_limit``), else the worker's ``--time-limit``."""
    limits = getattr(getattr(task, "request", None), "timelimit", None) or (None, None)
    hard = limits[0] or getattr(task, "time_limit", None) or _pool_time_limit
    if hard and ran >= 0.95 * float(hard):
        return f"TimeLimitExceeded({float(hard):g})"  # as celery words it
    return "celery ended the task without a state: its greenlet was stopped from outside it"
