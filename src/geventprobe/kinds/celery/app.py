"""``geventprobe run --celery APP`` / ``--celery-cmd COMMAND``: the user's celery worker under
``-P gevent``, with their own settings. No printing.

A celery gevent worker is one process: the consumer that takes tasks off the broker, the
broker's heartbeats and every task share one hub, and how the worker is started decides
the import order (the ``celery`` program patches before it imports the app;
``app.worker_main()`` patches nothing). So this starts the user's real worker the way
they start it, against a broker of the run's own, and probes it from the inside
(docs/celery.md):

1. ``plan()`` checks what it can without starting anything: the app spec or the command,
   the directory, the ``--task`` calls, the broker's URL or that ``redis-server`` is
   installed for the embedded one. ``prepare`` checks the user's broker answers (bounded).
2. The result, a ``CeleryApp``, is the run's target and its one subject
   (``core/target.py``): ``launch`` starts the broker (a throwaway redis-server unless
   ``--broker``) and the worker with geventprobe's boot dir first on its ``PYTHONPATH``
   (``kinds/celery/workers.run_celery``): its probe task alone, then C at once, then
   each ``--task``; ``judge`` turns the figures into the worker's verdict (its probe
   task's, and the connect phase's) and each task's (``task_rules.py``), with causes in
   celery's words (``celery_causes.py``); ``headline`` speaks of the worker and its tasks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from geventprobe.core import blocked, rules
from geventprobe.core.builds import Build
from geventprobe.core.progress import Listener
from geventprobe.core.session import Session
from geventprobe.core.target import Probed
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.kinds.celery import causes as celery_causes
from geventprobe.kinds.celery import task_rules
from geventprobe.kinds.celery.workers import (
    CeleryCommand,
    CeleryRun,
    Deadlines,
    UserTask,
    app_command,
    run_celery,
    user_command,
)
from geventprobe.processes import broker as brokers
from geventprobe.record import BuildResult, Calibration, Evidence, Verdict
from geventprobe.settings import Thresholds, Workload

_TASK_NAME = re.compile(r"^[A-Za-z_][\w.:-]*$")
CONNECT_ROUNDS = 1
"""Connect windows in a celery worker: one (C connects at once, while the heartbeat runs)."""


@dataclass(frozen=True)
class CeleryRequest:
    """What the user asked for (flags and ``[tool.geventprobe]``), not yet checked."""

    app: str | None = None
    """``--celery APP``, as celery's ``-A`` takes it."""
    command: str | None = None
    """``--celery-cmd COMMAND``: how they start the worker."""
    chdir: str | None = None
    """Where the worker runs (their project); None: the current directory."""
    broker: str | None = None
    """``--broker URL``; None: a throwaway redis-server."""
    tasks: tuple[UserTask, ...] = ()
    greenlets: int | None = None
    """``--greenlets`` given on the command line: ``-c`` for ``--celery APP``, at most this
    many tasks at once for ``--celery-cmd``."""
    default_greenlets: int = 16
    """The profile's greenlets: ``-c`` for ``--celery APP`` without ``--greenlets``."""


def parse_tasks(names: Sequence[str], args: Sequence[str], kwargs: Sequence[str],
                source: str = "--task") -> tuple[UserTask, ...]:
    """``--task NAME`` (repeatable) with ``--task-args JSON`` / ``--task-kwargs JSON``: one
    of each for every task, or one for all of them."""
    names = list(dict.fromkeys(names))
    for name in names:
        if not _TASK_NAME.match(name):
            raise ProbeError(f"{source} {name!r} is not a task name: give the name celery "
                             "registers, e.g. --task proj.tasks.charge")
    if (args or kwargs) and not names:
        raise ProbeError("--task-args and --task-kwargs go with --task NAME: add the task to "
                         "run (e.g. --task proj.tasks.charge --task-args '[1]')")

    def each(values: Sequence[str], flag: str, kind: type, example: str) -> list:
        parsed = []
        for text in values:
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ProbeError(f"{flag} {text!r} is not JSON ({exc.msg}): give a JSON "
                                 f"{'array' if kind is list else 'object'}, e.g. {flag} "
                                 f"'{example}'") from None
            if not isinstance(value, kind):
                raise ProbeError(f"{flag} {text!r} is not a JSON "
                                 f"{'array' if kind is list else 'object'}: e.g. {flag} "
                                 f"'{example}'")
            parsed.append(value)
        if len(parsed) not in (0, 1, len(names)):
            raise ProbeError(f"{flag} is given {len(parsed)} times for {len(names)} --task: "
                             "give it once (for every task) or once per --task, in order")
        if len(parsed) == 1:
            parsed = parsed * len(names)
        return parsed or [kind() for _ in names]

    all_args = each(args, "--task-args", list, '[1, "a"]')
    all_kwargs = each(kwargs, "--task-kwargs", dict, '{"seconds": 0.2}')
    return tuple(UserTask(n, tuple(a), dict(k))
                 for n, a, k in zip(names, all_args, all_kwargs))


def call_text(task: UserTask) -> str:
    """``tasks.charge(1, retry=False)``, as the report shows a call (values as JSON)."""
    parts = [json.dumps(a) for a in task.args]
    parts += [f"{k}={json.dumps(v)}" for k, v in task.kwargs.items()]
    return f"{task.name}({', '.join(parts)})"


def shown_command(command: CeleryCommand) -> str:
    """The worker's command line as the user would type it (``celery`` for our interpreter's
    ``python -m celery``)."""
    argv = list(command.argv)
    if argv[:3] == [sys.executable, "-m", "celery"]:
        argv = ["celery", *argv[3:]]
    elif argv and argv[0] == sys.executable:
        argv[0] = "python"
    return redact(shlex.join(argv))


@dataclass(frozen=True)
class CeleryApp:
    """The user's celery worker, started their way: the run's target and its one subject."""

    build: Build
    """The one row: their worker (``APP``, or the command)."""
    command: CeleryCommand
    broker_url: str | None
    """``--broker`` (only ever passed on through an environment variable); None: embedded."""
    tasks: tuple[UserTask, ...] = ()
    greenlets: int | None = None
    """At most this many tasks at once (``--greenlets`` with ``--celery-cmd``)."""
    deployment: dict = field(default_factory=dict)
    """What the report shows about the deployment (``RunResult.app``)."""
    preload: bool = False
    """A celery worker has no master to preload in: always False (the causes read it)."""
    less_work: str = ("send fewer tasks at once (--greenlets) or fewer --task (a celery run "
                      "probes one worker: --builds does not apply)")
    """How the run can do less within ``--time-limit`` (its message says it)."""

    # -- as the run's subject

    def launch(self, session: Session, workload: Workload) -> CeleryRun:
        """The broker, then their worker with our probe in it; its tasks, its stop."""
        from geventprobe.app.routes import server_port

        # At most the run's greenlets at once (the server and the connection cap were sized
        # for them), whatever -c the worker runs with (-c 1000 opened 1,000 connections).
        wl = {"greenlets": workload.greenlets,
              "heartbeat_ms": workload.heartbeat_ms, "connect_rounds": CONNECT_ROUNDS,
              "connect_timeout_s": workload.connect_timeout_s,
              "statement_timeout_ms": workload.statement_timeout_ms,
              "monitor_ms": workload.monitor_ms,
              "thresholds": _connect_thresholds(session.plan.thresholds)}
        deadlines = Deadlines(boot=workload.boot_timeout_s,
                              start=workload.task_start_timeout_s,
                              user_task=workload.task_timeout_s)
        session.listener.phase("starting the broker" if self.broker_url is None
                               else "connecting to the broker")
        with brokers.broker(self.broker_url) as b:
            session.listener.phase("probing the celery worker")
            return run_celery(
                self.command, dsn=session.dsn, broker=b, wait_s=workload.task_wait_seconds,
                greenlets=self.greenlets, tasks=self.tasks,
                result_backend=b.url if b.embedded else None, deadlines=deadlines,
                workload=wl, server_port=server_port(session.dsn))

    def judge(self, run: CeleryRun, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The worker's verdict (its probe task's and its connect phase's), then each
        task's."""
        return judge(self, run, workload, thresholds, started)

    # -- as the run's target

    def steps(self) -> int:
        """One row: the worker."""
        return 1

    def prepare(self, listener: Listener) -> CeleryApp:
        """Check that the user's broker answers, within a bounded time (one line if not)."""
        if self.broker_url:
            listener.phase("checking the broker")
            brokers.check(self.broker_url)
        return self

    def imports(self) -> Sequence[Build]:
        """None: their worker imports what it imports."""
        return []

    def probe(self, session: Session, listener: Listener) -> Probed:
        """Their worker, as one row; a note for each task the worker never got to."""
        result = session.probe(self, label=self.build.name)
        listener.build_finished(result)
        return Probed([result], notes=_notes(result, self.tasks))

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The summary in the worker's words (``summary``)."""
        return summary(self.build.name, rows, code, calibration)

    def app_record(self) -> dict | None:
        """The deployment as probed (``RunResult.app``)."""
        return self.deployment


def _notes(result: BuildResult, tasks: Sequence[UserTask]) -> list[str]:
    """What the report adds about the worker's run: tasks never run, a burst smaller than
    the worker's -c, a soft time limit celery's gevent pool ignored, settings put back."""
    celery = result.facts.get("celery") or {}
    ran = {t.task for t in result.tasks}
    why = "was stopped from outside" if celery.get("interrupted") else "stalled"
    notes = [f"{t.name} was not run: the worker {why} before it (see its verdict)"
             for t in tasks if t.name not in ran and result.tasks]
    runs, sent = celery.get("concurrency") or 0, celery.get("tasks_at_once") or 0
    if sent and runs > sent:
        notes.append(f"your worker runs up to {runs} tasks at once (-c {runs}); the probe "
                     f"sent {sent} at once, each with a connection of its own: the run's "
                     "--greenlets, which the connection cap and the server are sized for "
                     "(--greenlets N for more, beyond 100 with --allow-many-connections)")
    soft = result.facts.get("soft_time_limits") or {}
    for task in result.tasks:
        longest = max((b.run_max_s or 0.0 for b in (task.alone, task.at_once) if b),
                      default=0.0)
        if task.task in soft and longest > soft[task.task]:
            notes.append(f"{task.task} has a soft time limit of {soft[task.task]:g} s but ran "
                         f"{longest:.1f} s: celery's gevent pool never enforces "
                         "soft_time_limit (it applies the hard time_limit only), so "
                         "SoftTimeLimitExceeded is never raised under -P gevent")
    restored = result.facts.get("settings_restored") or []
    if restored:
        notes.append(f"your worker's command line set {' and '.join(restored)} (celery -b or "
                     "--result-backend): geventprobe set the run's back before the worker "
                     "connected, so it never used yours")
    return notes


def _connect_thresholds(t: Thresholds) -> dict:
    """What ``probe.Rules`` reads to stop repeating connect rounds (one round here)."""
    return {"connect_min_window_ms": t.connect_min_window_ms,
            "connect_stall_share": t.connect_stall_share,
            "blocking_hub_lag_fraction": t.blocking_hub_lag_fraction,
            "blocking_wait_factor": t.blocking_wait_factor}


def plan(request: CeleryRequest) -> CeleryApp:
    """Check the request and build the worker's command; nothing is started here."""
    chdir = os.path.abspath(request.chdir or os.getcwd())
    if not os.path.isdir(chdir):
        raise ProbeError(f"--chdir {request.chdir} is not a directory: pass your project's "
                         "directory (where you start the celery worker)")
    _check_celery_installed()
    if request.broker:
        brokers.kind_of(request.broker)  # a scheme we do not speak: one line, now
    else:
        from geventprobe.processes.redis import find_server

        find_server()  # not installed: one line with the install command, now
    overrides = ["pointed it at the run's broker (CELERY_BROKER_URL and its read and write "
                 "variants in its environment, which celery reads before the app's broker_url; "
                 "a -b of its command line is put back at worker_init)",
                 "made it consume only from a queue of geventprobe's own, named per run and "
                 "removed after (your queues are never consumed from, purged or declared)"]
    if request.app is not None:
        concurrency = int(request.greenlets or request.default_greenlets)
        command = app_command(request.app, concurrency, chdir)
        greenlets = None
        overrides.insert(0, f"started it with -P gevent -c {concurrency} --without-mingle "
                            "--without-gossip (it never talks to your other workers)")
        name, how = request.app, "app"
    else:
        command = user_command(request.command or "", chdir)
        greenlets = request.greenlets
        concurrency = None
        name, how = shown_command(command), "command"
    if not os.environ.get("DATABASE_URL"):
        overrides.append("set DATABASE_URL to the probed server (your worker has none set)")
    broker_shown = (brokers.shown(request.broker) if request.broker
                    else "a throwaway redis-server (unix socket, nothing kept)")
    calls = [call_text(t) for t in request.tasks]
    deployment = {
        "kind": "celery",
        "app": request.app,
        "command": shown_command(command),
        "how": how,
        "chdir": chdir,
        "broker": broker_shown,
        "broker_embedded": not request.broker,
        "concurrency": concurrency,
        "tasks": [redact(c) for c in calls],
        "database_url_from_geventprobe": not os.environ.get("DATABASE_URL"),
        "overrides": overrides,
    }
    what = f"celery -A {request.app}" if request.app else f"`{name}`"
    build = Build(name=name, baseline=False, expected=None, env={},
                  description=f"your celery worker ({what}, -P gevent)")
    return CeleryApp(build=build, command=command, broker_url=request.broker or None,
                     tasks=request.tasks, greenlets=greenlets, deployment=deployment)


def _check_celery_installed() -> None:
    """geventprobe sends the tasks with celery itself: it must import here."""
    try:
        import celery  # noqa: F401
        import kombu  # noqa: F401
    except ImportError as exc:
        raise ProbeError(f"celery is not installed beside geventprobe ({exc}): pip install "
                         "\"geventprobe[celery]\" (it sends the probe's tasks through your "
                         "broker)") from None


# ------------------------------------------------------------------------- the row's verdict


def celery_facts(run: CeleryRun) -> dict:
    """What the worker said about itself as celery, for the record's facts."""
    ready = run.ready
    stop = run.stop
    return {
        "pool": ready.pool if ready else None,
        "concurrency": ready.concurrency if ready else None,
        "tasks_at_once": run.size,
        "queue": run.queue,
        "queue_removed": run.queue_cleanup is None,
        "queue_cleanup_error": run.queue_cleanup,
        "user_queues": list(ready.user_queues) if ready else [],
        "signals": dict(ready.signals) if ready else {},
        "versions": dict(ready.versions) if ready else {},
        "registered_tasks": list(ready.tasks) if ready else [],
        "boot_errors": list(run.boot_errors),
        "interrupted": task_rules.interrupted(run),
        "stop": ({"signal": stop.signal, "seconds": stop.seconds,
                  "ignored_sigterm": stop.ignored_sigterm, "exited_before": stop.exited_before}
                 if stop else None),
    }


def judge(subject: CeleryApp, run: CeleryRun, workload: Workload, t: Thresholds,
          started: float) -> BuildResult:
    """The row: the worker's verdict from its probe task and its connect phase, and every
    task's verdict."""
    b = subject.build
    facts = dict(run.facts, celery=celery_facts(run))
    calls = [(task.name, call_text(task)) for task in subject.tasks]
    tasks, _ = task_rules.judge_all(run, calls, t, workload.task_start_timeout_s, facts)
    probe = tasks[0] if tasks and tasks[0].probe else None
    connect = task_rules.connect_figures(run, t)
    evidence: list[Evidence] = list(probe.evidence) if probe is not None else []
    if connect is not None:
        evidence += rules.connect_evidence(connect, run.connected.greenlets, t)
    stacks = list(probe.blocked_by) if probe is not None else []
    if connect is not None and run.hub is not None and run.connected.connect is not None:
        windows = run.connected.connect.windows
        stacks = blocked.stacks(run.hub.events(), "connect",
                                (windows[0][0], windows[-1][1] + 0.05)) + stacks
    error = facts["celery"]["interrupted"]
    if error is not None:
        pass  # stopped or killed from outside: no verdict of the driver's or the tasks'
    elif probe is None:
        error = "the worker ran no probe task"
    elif probe.verdict is Verdict.FAILING and probe.stall is None:
        error = f"the probe task failed in your worker: {probe.first_error or probe.cause}"
    elif probe.verdict is Verdict.FAILING:  # stalled while the hub ran: not gevent's fault
        error = ("the worker did not run the probe tasks although its hub ran on time: "
                 + task_rules.stall_words(probe.stall, "the probe task"))
    elif run.connected is not None and run.connected.error:
        error = f"the probe could not connect from your worker: {redact(run.connected.error)}"
    if error is not None:
        from geventprobe.core.causes import explain_error

        advice = (task_rules.INTERRUPTED_FIX if error == facts["celery"]["interrupted"]
                  else explain_error(error))
        return BuildResult(
            build=b.name, description=b.description, baseline=False, expected=None,
            verdict=Verdict.ERROR, cause=error, advice=advice, evidence=evidence,
            facts=facts, metrics=None, workers=[], error=error,
            duration_s=time.monotonic() - started, timings=dict(run.timings),
            blocked_by=stacks, tasks=tasks)
    verdict, cause, advice = probe.verdict, probe.cause, probe.advice
    if any(e.fired and e.rule == "connect-stall" for e in evidence) and verdict in (
            Verdict.OK, Verdict.BUSY_WAIT, Verdict.SERIALIZED):
        verdict = Verdict.BLOCKING
        cause, advice = celery_causes.explain(Verdict.BLOCKING, facts, {"connect-stall"},
                                              None, stacks)
    return BuildResult(
        build=b.name, description=b.description, baseline=False, expected=None,
        verdict=verdict, cause=cause, advice=advice, evidence=evidence, facts=facts,
        metrics=None, workers=[], duration_s=time.monotonic() - started,
        timings=dict(run.timings), blocked_by=stacks, tasks=tasks)


def summary(name: str, rows: list[BuildResult], code: int,
            calibration: Calibration | None) -> str:
    """The verdict sentence of a ``--celery`` run, in the worker's words."""
    row = next((b for b in rows if b.build == name), None)
    if row is None:
        return rules.summary(rows, code)
    driver = row.facts.get("driver")
    version = (row.facts.get(driver) or {}).get("version") if driver else None
    if row.verdict is Verdict.OK:
        text = (f"your celery worker {name} cooperates with gevent under -P gevent"
                + (f" ({driver} {version})" if driver else ""))
    elif row.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.SERIALIZED):
        text = f"your celery worker {name} is {row.verdict} under -P gevent"
        if row.cause:
            text += f": {row.cause}"
        if code == 0:
            text += " (not failing: --fail-on leaves it out)"
    elif row.verdict is Verdict.ERROR and (row.facts.get("celery") or {}).get("interrupted"):
        text = f"your celery worker {name} was not judged: {row.error or row.cause}"
    elif row.verdict is Verdict.ERROR:
        text = f"the probe failed in your celery worker: {row.error or row.cause}"
    else:
        return rules.summary(rows, code)
    users = [t for t in row.tasks if not t.probe]
    if users:
        text += "; tasks: " + ", ".join(
            f"{t.task} {t.verdict}" + (f" ({t.cause})" if t.cause and t.verdict not in (
                Verdict.OK,) and not t.cause.startswith("the worker's hub is blocked")
                and t.cause != row.error else "")
            for t in users)
    if calibration is not None and not calibration.passed:
        text = f"INCONCLUSIVE: calibration failed: {calibration.reason}; {text}"
    return text
