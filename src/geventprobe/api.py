"""The Python API: ``probe_drivers``, ``probe_app``, ``probe_celery``, the one way through a run.

Each function takes the settings of ``geventprobe run`` as keyword arguments, prints
nothing, and returns the ``RunResult`` that ``run --json`` writes (passwords redacted, and
host names too with ``redact_hosts=True``): ``result.ok`` is the exit code's verdict,
``result.verdicts`` each build's, route's and task's, ``result.explain()`` the report as
the terminal words it. Bad input raises ``ProbeError`` (``geventprobe.ProbeError``) whose
``str()`` is the one line the command line prints, ``exit_code`` its exit code.

Everything a call starts (PostgreSQL, gunicorn, celery, redis-server, temp dirs) is
stopped, reaped and removed before it returns or raises, also on KeyboardInterrupt;
what was running before the call (a pytest session's shared server) is left alone.
Called from the main thread, a Ctrl-C during the call is held while a child is being
started or stopped, so none escapes the cleanup; the previous SIGINT handler is back
when the call ends.

The command line is a thin layer on this module: ``cli/run.py`` parses its flags into a
``plan.RunRequest``, calls ``plan_run`` and ``run_plan``, renders and exits; the
functions below build the same ``RunRequest`` from keyword arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Union

from geventprobe.core import plan as plans
from geventprobe.core import runner
from geventprobe.core.progress import Listener
from geventprobe.dsn import foreign_scheme, remember, scrub_result
from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.delay_proxy import MAX_RTT_MS
from geventprobe.processes.preflight import DEFAULT_TIME_LIMIT_S
from geventprobe.record import RunResult
from geventprobe.settings import RunPlan

__all__ = ["AUTO", "ProbeError", "RunResult", "probe_app", "probe_celery", "probe_drivers"]

AUTO = "auto"
"""``routes="auto"``: the app's parameterless GET routes, found in its URLconf or url_map."""

Task = Union[str, tuple]
"""A celery task to run: its name, or ``(name, args)`` or ``(name, args, kwargs)``."""


def plan_run(request: plans.RunRequest) -> RunPlan:
    """Check what was asked and resolve it into the run's plan (``core/plan.for_run``);
    ProbeError, one line, for what cannot work. Starts nothing that outlives the call."""
    return plans.for_run(request)


def run_plan(plan: RunPlan, listener: Listener | None = None, *,
             redact_hosts: bool = False) -> RunResult:
    """Run ``plan`` (``core/runner.run``) and return the record every output reads:
    passwords redacted always, host names with ``redact_hosts``."""
    return scrub_result(runner.run(plan, listener), hosts=redact_hosts)


def run(request: plans.RunRequest, listener: Listener | None = None, *,
        redact_hosts: bool = False) -> RunResult:
    """Plan and run ``request``, stopping and removing whatever it started however it
    ends (what the three ``probe_*`` functions call)."""
    if not request.command:
        request = dataclasses.replace(request, command=as_command(request, redact_hosts))
    with _owned():
        return run_plan(plan_run(request), listener, redact_hosts=redact_hosts)


def as_command(request: plans.RunRequest, redact_hosts: bool = False) -> list[str]:
    """The ``geventprobe run`` command line that asks for what ``request`` asks, recorded in
    ``RunResult.command`` (so a record says how to run it again). The DSN and the broker
    stay out of it, as ``GEVENTPROBE_DSN`` and ``GEVENTPROBE_BROKER`` keep them out of a
    typed command."""
    r = request
    argv = ["geventprobe", "run"]
    for flag, value in (("--app", r.app), ("--celery", r.celery),
                        ("--celery-cmd", r.celery_cmd), ("--gunicorn-config", r.gunicorn_config),
                        ("--chdir", r.chdir), ("--builds", r.builds),
                        ("--psycopg", r.psycopg), ("--gevent", r.gevent),
                        ("--workers", r.workers), ("--greenlets", r.greenlets),
                        ("--rtt", None if r.rtt_ms is None else f"{r.rtt_ms:g}"),
                        ("--profile", r.profile), ("--config", r.config_path),
                        ("--fail-on", r.fail_on)):
        if value is not None:
            argv += [flag, str(value)]
    # A kind's own flags (``kinds.options``): --uwsgi, --uwsgi-cmd...
    argv += [w for name, value in r.options.items() if value is not None
             for w in ("--" + name.replace("_", "-"), str(value))]
    argv += [w for route in r.routes for w in ("--route", route)]
    argv += [w for pattern in r.route_exclude for w in ("--route-exclude", pattern)]
    argv += [w for task in r.tasks for w in ("--task", task)]
    argv += [w for a in r.task_args for w in ("--task-args", a)]
    argv += [w for k in r.task_kwargs for w in ("--task-kwargs", k)]
    for flag, on in (("--preload", r.preload), ("--calibrate", r.calibrate),
                     ("--redact-hosts", redact_hosts),
                     ("--allow-many-connections", r.allow_many_connections)):
        if on:
            argv.append(flag)
    if r.time_limit_s != DEFAULT_TIME_LIMIT_S:
        argv += ["--time-limit", f"{r.time_limit_s:g}"]
    return argv


def probe_drivers(*, builds: Sequence[str] | None = None, workers: int | None = None,
                  greenlets: int | None = None, dsn: str | None = None,
                  rtt_ms: float | None = None, preload: bool = False,
                  profile: str | None = None, config_path: str | None = None,
                  calibrate: bool = False, psycopg: Sequence[str] | None = None,
                  gevent: Sequence[str] | None = None, fail_on: Sequence[str] | None = None,
                  time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                  allow_many_connections: bool = False, redact_hosts: bool = False,
                  server: str | None = None, uwsgi_command: str | None = None,
                  listener: Listener | None = None) -> RunResult:
    """Probe the built-in driver builds in real gunicorn gevent workers
    (``geventprobe run``), or uWSGI's (``server="uwsgi"``: ``run --server uwsgi``).

    ``builds``: names among binary, c, python, psycopg2-green, psycopg2 [all];
    ``psycopg``/``gevent``: release versions for a version matrix; ``uwsgi_command``: the
    uWSGI flags the builds run under with ``server="uwsgi"`` (``"uwsgi --gevent-monkey-patch"``;
    ``--uwsgi-cmd``). The other settings are those of every ``probe_*`` function
    (docs/pytest.md).
    """
    _check_common(workers, greenlets, rtt_ms, time_limit_s, dsn)
    return run(plans.RunRequest(
        command=[], workers=workers, greenlets=greenlets, builds=_csv(builds, "builds"),
        dsn=dsn, rtt_ms=rtt_ms, preload=preload, config_path=config_path,
        calibrate=calibrate, psycopg=_csv(psycopg, "psycopg"), gevent=_csv(gevent, "gevent"),
        allow_many_connections=allow_many_connections, time_limit_s=time_limit_s,
        profile=profile, fail_on=_csv(fail_on, "fail_on"),
        options={"server": server, "uwsgi_cmd": uwsgi_command}),
        listener, redact_hosts=redact_hosts)


def probe_app(app: str, *, routes: str | Sequence[str] = (),
              route_exclude: Sequence[str] = (), gunicorn_config: str | None = None,
              chdir: str | None = None, workers: int | None = None,
              greenlets: int | None = None, dsn: str | None = None,
              rtt_ms: float | None = None, preload: bool = False, profile: str | None = None,
              config_path: str | None = None, calibrate: bool = False,
              fail_on: Sequence[str] | None = None,
              time_limit_s: float = DEFAULT_TIME_LIMIT_S,
              allow_many_connections: bool = False, redact_hosts: bool = False,
              listener: Listener | None = None) -> RunResult:
    """Probe YOUR app (``MODULE:CALLABLE``, as given to gunicorn) under YOUR gunicorn config
    (``geventprobe run --app``).

    ``routes``: ``"/items"``, ``"POST /login"``, a list of them, or ``"auto"`` (the app's
    parameterless GET routes from Django's URLconf or Flask's ``url_map``; it may stand
    in a list beside routes of your own); ``route_exclude``: glob patterns dropping found
    routes (``"/admin/*"``). ``chdir``: your project's directory [the current one].
    """
    _check_common(workers, greenlets, rtt_ms, time_limit_s, dsn)
    if not isinstance(app, str) or not app:
        raise ProbeError("probe_app needs your app as MODULE:CALLABLE, as you give it to "
                         "gunicorn, e.g. probe_app(\"myproject.wsgi:application\")")
    return run(plans.RunRequest(
        command=[], workers=workers, greenlets=greenlets, dsn=dsn, rtt_ms=rtt_ms,
        preload=preload, config_path=config_path, calibrate=calibrate,
        allow_many_connections=allow_many_connections, time_limit_s=time_limit_s, app=app,
        gunicorn_config=_path(gunicorn_config), chdir=_path(chdir),
        routes=_texts(routes, "routes"), route_exclude=_texts(route_exclude, "route_exclude"),
        profile=profile, fail_on=_csv(fail_on, "fail_on")),
        listener, redact_hosts=redact_hosts)


def probe_celery(app: str | None = None, *, command: str | None = None,
                 tasks: Sequence[Task] = (), broker: str | None = None,
                 chdir: str | None = None, greenlets: int | None = None,
                 dsn: str | None = None, rtt_ms: float | None = None,
                 profile: str | None = None, config_path: str | None = None,
                 calibrate: bool = False, fail_on: Sequence[str] | None = None,
                 time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                 allow_many_connections: bool = False, redact_hosts: bool = False,
                 listener: Listener | None = None) -> RunResult:
    """Probe YOUR celery worker under ``-P gevent`` (``geventprobe run --celery``).

    ``app``: the ``-A`` app (``celery -A APP worker -P gevent``), or ``command``: your own
    way of starting it (``"python worker.py"``). ``tasks``: each a name, or ``(name,
    args)`` / ``(name, args, kwargs)``, run alone then C at once. ``broker``: your redis or
    RabbitMQ URL instead of a throwaway redis-server (a queue of our own, removed after).
    """
    _check_common(None, greenlets, rtt_ms, time_limit_s, dsn)
    if broker is not None:
        if not broker.strip():
            raise ProbeError("the broker URL is empty: give your broker's URL, or leave "
                             "broker out to use a throwaway redis-server")
        remember(broker)
    if app is None and command is None:
        raise ProbeError("probe_celery needs your worker: app=\"proj\" (celery -A proj "
                         "worker -P gevent) or command=\"python worker.py\"")
    names, args, kwargs = _tasks(tasks)
    return run(plans.RunRequest(
        command=[], greenlets=greenlets, dsn=dsn, rtt_ms=rtt_ms, config_path=config_path,
        calibrate=calibrate, allow_many_connections=allow_many_connections,
        time_limit_s=time_limit_s, chdir=_path(chdir), profile=profile,
        fail_on=_csv(fail_on, "fail_on"), celery=app, celery_cmd=command, broker=broker,
        tasks=names, task_args=args, task_kwargs=kwargs),
        listener, redact_hosts=redact_hosts)


# ------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _owned() -> Iterator[None]:
    """What the block starts is stopped and removed when it ends (``children.owned``), with
    Ctrl-C held while a child is being started or stopped (``sigint_routed``)."""
    with sigint_routed(), children.owned():
        yield


@contextlib.contextmanager
def sigint_routed() -> Iterator[None]:
    """In the main thread, while Python's own SIGINT handler is in place: a Ctrl-C during
    the block goes through ``children.deliver`` (held while a child is being started or
    stopped, so none escapes its record), a second one hurries the cleanup; the handler is
    put back after. Elsewhere (a thread, a host that owns SIGINT) nothing changes."""
    children.hurry(False)
    previous = None
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        if interrupted:
            children.hurry()  # a second Ctrl-C: stop the children now
            return
        interrupted = True
        children.deliver(KeyboardInterrupt())

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        children.hurry(False)


def _check_common(workers: int | None, greenlets: int | None, rtt_ms: float | None,
                  time_limit_s: float, dsn: str | None) -> None:
    """What the command line's option types check before a run, as one line each."""
    for name, value, low, high in (("workers", workers, 1, 64),
                                   ("greenlets", greenlets, 2, 1000)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not low <= value <= high):
            raise ProbeError(f"{name}={value!r} is not a whole number from {low} to {high}: "
                             f"give {name} in that range, or leave it out for the profile's")
    if rtt_ms is not None and (not isinstance(rtt_ms, (int, float)) or isinstance(rtt_ms, bool)
                               or not math.isfinite(rtt_ms) or not 0 <= rtt_ms <= MAX_RTT_MS):
        raise ProbeError(f"rtt_ms={rtt_ms!r} is not a round trip from 0 to {MAX_RTT_MS:g} ms: "
                         "give milliseconds (1 same zone, 20-80 across regions)")
    if (not isinstance(time_limit_s, (int, float)) or isinstance(time_limit_s, bool)
            or not math.isfinite(time_limit_s) or time_limit_s < 1):
        raise ProbeError(f"time_limit_s={time_limit_s!r} is not a number of seconds of 1 or "
                         "more: give how long the run may last")
    if dsn is None:
        return
    if not isinstance(dsn, str) or not dsn.strip():
        raise ProbeError("the DSN is empty: give your server's DSN, or leave dsn out to use "
                         "an embedded server")
    remember(dsn)  # masked wherever it appears, free text included
    scheme = foreign_scheme(dsn)
    if scheme:
        hint = (" (SQLAlchemy's driver suffix: drop it)" if scheme.lower().startswith(
            ("postgresql+", "postgres+")) else "")
        raise ProbeError(f"{scheme}:// is not a PostgreSQL URL{hint}: give a postgresql:// "
                         "URI or libpq key=value pairs")


def _texts(value: str | Sequence[str], name: str) -> tuple[str, ...]:
    """One text or a sequence of them, as a tuple (a bare string is one item, not letters)."""
    if isinstance(value, str):
        return (value,)
    if not all(isinstance(v, str) for v in value):
        raise ProbeError(f"{name} must be a list of strings, e.g. {name}=[\"/items\"]")
    return tuple(value)


def _csv(value: str | Sequence[str] | None, name: str) -> str | None:
    """A list setting as the command line's comma-separated text (None: not given)."""
    if value is None:
        return None
    return ",".join(_texts(value, name))


def _path(value) -> str | None:
    """A path given as ``str`` or ``os.PathLike``."""
    import os

    return None if value is None else os.fspath(value)


def _tasks(tasks: Sequence[Task]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``tasks`` as the command line's ``--task``, ``--task-args``, ``--task-kwargs``."""
    if isinstance(tasks, (str, tuple)):
        tasks = [tasks]
    names, args, kwargs = [], [], []
    for task in tasks:
        if isinstance(task, str):
            task = (task,)
        if not (isinstance(task, (tuple, list)) and 1 <= len(task) <= 3
                and isinstance(task[0], str)):
            raise ProbeError(f"task {task!r} is not a task: give its name, or (name, args) or "
                             "(name, args, kwargs), e.g. (\"proj.tasks.charge\", [1])")
        names.append(task[0])
        try:
            args.append(json.dumps(list(task[1]) if len(task) > 1 else []))
            kwargs.append(json.dumps(dict(task[2]) if len(task) > 2 else {}))
        except (TypeError, ValueError) as exc:
            raise ProbeError(f"task {task[0]}'s arguments cannot be sent as JSON ({exc}): give "
                             "lists, dicts, strings and numbers") from None
    if not any(a != "[]" for a in args) and not any(k != "{}" for k in kwargs):
        return tuple(names), (), ()
    return tuple(names), tuple(args), tuple(kwargs)


def probe_uwsgi(app: str | None = None, *, command: str | None = None,
                routes: str | Sequence[str] = (), chdir: str | None = None,
                workers: int | None = None, greenlets: int | None = None,
                dsn: str | None = None, rtt_ms: float | None = None,
                profile: str | None = None, config_path: str | None = None,
                calibrate: bool = False, fail_on: Sequence[str] | None = None,
                time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                allow_many_connections: bool = False, redact_hosts: bool = False,
                listener: Listener | None = None) -> RunResult:
    """Probe YOUR app under uWSGI's gevent loop (``geventprobe run --uwsgi`` /
    ``--uwsgi-cmd``).

    ``app``: ``MODULE:CALLABLE`` or a WSGI file, under uWSGI's defaults (no patch flag), or
    ``command``: your own way of starting it (``"uwsgi --ini uwsgi.ini"``: your patch flag,
    lazy-apps and imports apply). ``routes``: ``"/items"``, ``"POST /login"`` or a list of
    them. ``chdir``: your project's directory [the current one] (docs/uwsgi.md).
    """
    _check_common(workers, greenlets, rtt_ms, time_limit_s, dsn)
    if app is None and command is None:
        raise ProbeError("probe_uwsgi needs your app: app=\"myproject.wsgi:application\" "
                         "(under uWSGI's defaults) or command=\"uwsgi --ini uwsgi.ini\"")
    return run(plans.RunRequest(
        command=[], workers=workers, greenlets=greenlets, dsn=dsn, rtt_ms=rtt_ms,
        config_path=config_path, calibrate=calibrate,
        allow_many_connections=allow_many_connections, time_limit_s=time_limit_s,
        chdir=_path(chdir), routes=_texts(routes, "routes"), profile=profile,
        fail_on=_csv(fail_on, "fail_on"), options={"uwsgi": app, "uwsgi_cmd": command}),
        listener, redact_hosts=redact_hosts)
