"""From what the user asked (flags and ``[tool.geventprobe]``) to a ``RunPlan``, once.

Every command resolves its plan here and nowhere else: the profile with all its layers
and flags (``settings.profile_for``), what is probed (the target: the built-in builds,
the user's gunicorn app, the user's celery worker, a version matrix, the calibration
controls alone: the one place the kind of worker is chosen), ``--preload``,
``--fail-on``, calibration. Combinations that cannot work are refused here, one line
each (exit 2), before anything is started. The plan is frozen: nothing changes it after.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geventprobe import settings
from geventprobe.app import gunicorn_app
from geventprobe.app.routes import AUTO, parse_routes
from geventprobe.core.builds import Build, parse_builds
from geventprobe.core.calibrate import CalibrationOnly
from geventprobe.core.drivers import DriverBuilds
from geventprobe.core.target import Target
from geventprobe.errors import ProbeError
from geventprobe.settings import ProjectSettings, RunPlan
from geventprobe.versions import matrix

if TYPE_CHECKING:
    from geventprobe.kinds.celery import app as celery_app


@dataclass(frozen=True)
class RunRequest:
    """What ``geventprobe run`` was given on its command line (None: not given)."""

    command: list[str]
    """The command line as typed (redacted when recorded)."""
    workers: int | None = None
    greenlets: int | None = None
    builds: str | None = None
    """``--builds``, comma-separated."""
    dsn: str | None = None
    rtt_ms: float | None = None
    preload: bool = False
    config_path: str | None = None
    calibrate: bool = False
    psycopg: str | None = None
    """``--psycopg`` versions (a version matrix)."""
    gevent: str | None = None
    """``--gevent`` versions (a version matrix)."""
    allow_many_connections: bool = False
    time_limit_s: float = 600.0
    app: str | None = None
    gunicorn_config: str | None = None
    chdir: str | None = None
    routes: tuple[str, ...] = ()
    """``--route`` texts; ``auto``: the app's parameterless GET routes (``route_finder``)."""
    route_exclude: tuple[str, ...] = ()
    """``--route-exclude`` globs: found routes to leave out."""
    profile: str | None = None
    fail_on: str | None = None
    celery: str | None = None
    """``--celery APP``."""
    celery_cmd: str | None = None
    """``--celery-cmd COMMAND``."""
    broker: str | None = None
    tasks: tuple[str, ...] = ()
    """``--task`` names, in order."""
    task_args: tuple[str, ...] = ()
    """``--task-args`` JSON texts (one for all tasks, or one per task)."""
    task_kwargs: tuple[str, ...] = ()


def for_run(request: RunRequest, project: ProjectSettings | None = None) -> RunPlan:
    """The plan of ``geventprobe run``: default.toml < ``--profile`` < pyproject's
    ``[tool.geventprobe]`` < ``--config`` < flags."""
    project = settings.load_project() if project is None else project
    profile = settings.profile_for(request.profile, request.config_path, project,
                                   workers=request.workers, greenlets=request.greenlets,
                                   rtt_ms=request.rtt_ms, dsn=request.dsn)
    celery = _celery(request, project, profile.workload.greenlets)
    app = _app(request, project) if celery is None else None
    builds, named = parse_builds(request.builds if request.builds is not None
                                 else project.builds)
    calibrate = request.calibrate or profile.calibrate
    fail_on = (settings.parse_fail_on(request.fail_on, "--fail-on")
               if request.fail_on is not None else profile.fail_on)
    sets = matrix.requested(request.psycopg, request.gevent)
    target: Target
    if celery is not None:  # one worker process; no HTTP route in a celery worker
        profile = dataclasses.replace(profile, workload=dataclasses.replace(
            profile.workload, workers=1, http_rate=0.0))
        preload, target = False, celery
    elif app is not None:  # their workers, as their config says (or --workers)
        profile = dataclasses.replace(profile, workload=dataclasses.replace(
            profile.workload, workers=app.workers))
        preload, target = app.preload, app
    else:
        preload = request.preload or bool(project.preload)
        if sets:
            if calibrate:
                raise ProbeError("--calibrate cannot be combined with --psycopg/--gevent: run "
                                 "`geventprobe calibrate` on its own first")
            target = matrix.VersionMatrix.of(builds, sets, named=named)
        else:
            target = DriverBuilds(builds, named)
    return RunPlan(profile=profile, target=target, dsn=request.dsn or None, preload=preload,
                   command=request.command, calibrate=calibrate, fail_on=fail_on,
                   time_limit_s=request.time_limit_s,
                   allow_many_connections=request.allow_many_connections)


def _celery(request: RunRequest, project: ProjectSettings, greenlets: int
            ) -> celery_app.CeleryApp | None:
    """``--celery APP`` / ``--celery-cmd`` (or ``celery`` / ``celery_cmd`` in pyproject): the
    user's celery worker; else None. Every flag that cannot go with it is refused here."""
    # Given, even empty: an unset $VAR in CI gives --celery-cmd "", which must be refused,
    # never turn the run into one of the built-in builds.
    asked = request.celery is not None or request.celery_cmd is not None
    if request.celery is not None and request.celery_cmd is not None:
        raise ProbeError("--celery and --celery-cmd both say how to start the worker: give "
                         "one (--celery APP: `celery -A APP worker -P gevent`; --celery-cmd: "
                         "your own command)")
    if not asked and (request.tasks or request.task_args or request.task_kwargs
                      or request.broker) and not (project.celery or project.celery_cmd):
        flag = ("--task" if request.tasks else "--task-args" if request.task_args else
                "--task-kwargs" if request.task_kwargs else "--broker")
        raise ProbeError(f"{flag} goes with a celery worker: add --celery APP (or --celery-cmd "
                         "\"COMMAND\"), e.g. --celery proj --task proj.tasks.charge")
    builds_asked = request.builds is not None or bool(request.psycopg or request.gevent)
    if asked:
        if request.app:
            raise ProbeError("--celery probes a celery worker and --app a gunicorn app: run "
                             "them one at a time")
        if builds_asked:
            raise ProbeError("--celery probes the driver your worker imports: drop --builds, "
                             "--psycopg and --gevent (or drop --celery to probe the built-in "
                             "builds)")
    elif request.app or builds_asked or not (project.celery or project.celery_cmd):
        return None  # the command line asked for something else: the project's worker waits
    if request.routes or request.route_exclude:
        raise ProbeError("--route drives a route of a gunicorn app: a celery worker's are its "
                         "tasks: use --task NAME")
    if request.gunicorn_config:
        raise ProbeError("--gunicorn-config goes with --app: a celery worker reads its own "
                         "settings (drop --gunicorn-config)")
    if request.preload:
        raise ProbeError("--preload is gunicorn's: a celery -P gevent worker is one process "
                         "with no master (drop --preload)")
    if request.workers is not None:
        raise ProbeError("--workers is gunicorn's: a celery -P gevent worker is one process "
                         "(drop --workers; --greenlets sets how many tasks run at once)")
    if asked:
        app, command = request.celery, request.celery_cmd
    elif project.celery and project.celery_cmd:
        raise ProbeError(f"{project.source}: celery and celery_cmd both say how to start the "
                         "worker: keep one")
    else:
        app, command = project.celery, project.celery_cmd
    if request.tasks:  # the command line's tasks replace the project's
        names, args, kwargs = (list(request.tasks), list(request.task_args),
                               list(request.task_kwargs))
    else:
        names = [name for name, _, _ in project.tasks]
        args = list(request.task_args) or [json.dumps(a) for _, a, _ in project.tasks]
        kwargs = list(request.task_kwargs) or [json.dumps(k) for _, _, k in project.tasks]
    # Imported here: a run that probes no celery worker does without it (0.1 s at start).
    from geventprobe.kinds.celery import app as celery_app

    tasks = celery_app.parse_tasks(names, args, kwargs)
    return celery_app.plan(celery_app.CeleryRequest(
        app=app, command=command, chdir=request.chdir or project.chdir,
        broker=request.broker, tasks=tasks, greenlets=request.greenlets,
        default_greenlets=greenlets))


def _app(request: RunRequest, project: ProjectSettings) -> gunicorn_app.GunicornApp | None:
    """``--app`` (or ``app`` in pyproject): read the user's gunicorn settings; else None."""
    builds_asked = request.builds is not None or bool(request.psycopg or request.gevent)
    app = request.app
    if request.routes and not (app or (project.app and not builds_asked)):
        raise ProbeError("--route drives a route of your app: add --app MODULE:CALLABLE "
                         "(e.g. --app myproject.wsgi:application --route /login)")
    texts = request.routes or project.routes
    auto = any(str(t).strip().lower() == AUTO for t in texts)
    routes = parse_routes([t for t in texts if str(t).strip().lower() != AUTO])
    if request.route_exclude and not auto:
        raise ProbeError("--route-exclude drops routes that --route auto found: add --route "
                         "auto (or leave out the --route you do not want)")
    if app and builds_asked:
        raise ProbeError("--app probes the driver your app imports: drop --builds, --psycopg "
                         "and --gevent (or drop --app to probe the built-in builds)")
    # Checked before --builds can turn app mode off: a config that is never read must not
    # pass in silence.
    if not app and (request.gunicorn_config or request.chdir) and (
            builds_asked or not project.app):
        raise ProbeError("--gunicorn-config and --chdir go with --app MODULE:CALLABLE: "
                         "add --app (e.g. --app myproject.wsgi:application)")
    if not app and builds_asked:
        return None  # built-in builds asked for on the command line: the project's app waits
    app = app or project.app
    if not app:
        return None
    return gunicorn_app.plan(gunicorn_app.AppRequest(
        app=app,
        gunicorn_config=request.gunicorn_config or project.gunicorn_config,
        chdir=request.chdir or project.chdir,
        workers=request.workers,
        preload=request.preload or bool(project.preload),
        routes=tuple(routes), auto_routes=auto, route_exclude=tuple(request.route_exclude),
        dsn=request.dsn))


def for_calibrate(command: list[str], *, workers: int | None = None,
                  greenlets: int | None = None, dsn: str | None = None,
                  rtt_ms: float | None = None, config_path: str | None = None,
                  profile: str | None = None) -> RunPlan:
    """The plan of ``geventprobe calibrate``: the controls alone, with the profile a run
    of this project would use."""
    resolved = settings.profile_for(profile, config_path, settings.load_project(),
                                    workers=workers, greenlets=greenlets, rtt_ms=rtt_ms,
                                    dsn=dsn)
    return RunPlan(profile=resolved, target=CalibrationOnly(), dsn=dsn or None,
                   preload=False, command=command, calibrate=True)


BISECT_WORKERS, BISECT_GREENLETS = 2, 8
"""A bisect runs several probes in a row: a small workload by default (the classes are far
apart, wait× ≈ 1 against ≈ greenlets), a ``--config`` profile's own sizes if one is given."""


def for_bisect(command: list[str], builds: list[Build], *, workers: int | None = None,
               greenlets: int | None = None, dsn: str | None = None,
               rtt_ms: float | None = None, preload: bool = False,
               config_path: str | None = None) -> RunPlan:
    """The plan shared by every probe of ``geventprobe bisect`` (``builds``: ``--build``)."""
    profile = settings.load_profile(config_path)
    small = config_path is None
    profile = settings.with_sizes(profile, workers or (BISECT_WORKERS if small else None),
                                  greenlets or (BISECT_GREENLETS if small else None))
    profile = settings.with_connect_timeout(settings.with_rtt(profile, rtt_ms), dsn)
    return RunPlan(profile=profile, target=DriverBuilds(builds, named=True), dsn=dsn or None,
                   preload=preload, command=command)
