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
from dataclasses import dataclass
from typing import Any

from geventprobe import kinds, settings
from geventprobe.app import gunicorn_app
from geventprobe.app.routes import AUTO, parse_routes
from geventprobe.core.builds import Build, parse_builds
from geventprobe.core.calibrate import CalibrationOnly
from geventprobe.core.drivers import DriverBuilds
from geventprobe.core.target import Target
from geventprobe.errors import ProbeError
from geventprobe.settings import ProjectSettings, RunPlan
from geventprobe.versions import matrix


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
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The flags a kind of worker declares for itself (``kinds.options``), by name: how a
    kind that plans its own runs (``kinds.plan``) is asked for."""


def for_run(request: RunRequest, project: ProjectSettings | None = None) -> RunPlan:
    """The plan of ``geventprobe run``: default.toml < ``--profile`` < pyproject's
    ``[tool.geventprobe]`` < ``--config`` < flags."""
    project = settings.load_project() if project is None else project
    profile = settings.profile_for(request.profile, request.config_path, project,
                                   workers=request.workers, greenlets=request.greenlets,
                                   rtt_ms=request.rtt_ms, dsn=request.dsn)
    # A kind of worker that plans its own run (a celery worker...), when its flags ask for it.
    kind = kinds.plan(request, project, profile)
    app = _app(request, project) if kind is None else None
    builds, named = parse_builds(request.builds if request.builds is not None
                                 else project.builds)
    calibrate = request.calibrate or profile.calibrate
    fail_on = (settings.parse_fail_on(request.fail_on, "--fail-on")
               if request.fail_on is not None else profile.fail_on)
    sets = matrix.requested(request.psycopg, request.gevent)
    target: Target
    if kind is not None:  # its workload as the kind shapes it (one celery worker...)
        profile = dataclasses.replace(profile, workload=kind.workload)
        preload, target = False, kind.target
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
