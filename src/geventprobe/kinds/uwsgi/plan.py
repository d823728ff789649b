"""How a run of a uWSGI app is asked for (``--uwsgi``, ``--uwsgi-cmd``) and planned.

``kinds.plan`` calls ``plan`` with every run's request; it answers None unless one of its
flags was given. Every flag that cannot go with it is refused here, one line each (exit 2).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from geventprobe.app.routes import AUTO, parse_routes
from geventprobe.errors import ProbeError
from geventprobe.kinds.interface import KindPlan

if TYPE_CHECKING:
    from geventprobe.core.plan import RunRequest
    from geventprobe.settings import Profile, ProjectSettings

OPTIONS = [
    click.option("--uwsgi", "uwsgi", metavar="APP", default=None,
                 help="Probe YOUR app under uWSGI's gevent loop: MODULE:CALLABLE or a WSGI "
                      "file, under uWSGI's defaults (`uwsgi --master --gevent G`; no patch "
                      "flag: add yours with --uwsgi-cmd)."),
    click.option("--uwsgi-cmd", "uwsgi_cmd", metavar="COMMAND", default=None,
                 help="Probe YOUR app started YOUR way, e.g. \"uwsgi --ini uwsgi.ini\": its "
                      "patch flags, lazy-apps and imports apply; geventprobe binds loopback "
                      "only."),
    click.option("--server", "server", type=click.Choice(["gunicorn", "uwsgi"]), default=None,
                 help="The WSGI server the built-in driver builds run under: gunicorn "
                      "(default) or uwsgi (`--gevent-early-monkey-patch`, or your flags in "
                      "--uwsgi-cmd without an app)."),
]

# Flags of other kinds of run, and why each cannot go with a uWSGI app.
_OTHERS = (
    ("app", "--app", "--app probes a gunicorn app and --uwsgi a uWSGI one: run them one at a "
                     "time"),
    ("celery", "--celery", "--celery probes a celery worker and --uwsgi a uWSGI app: run them "
                           "one at a time"),
    ("celery_cmd", "--celery-cmd", "--celery-cmd probes a celery worker and --uwsgi a uWSGI "
                                   "app: run them one at a time"),
    ("builds", "--builds", "--uwsgi probes the driver your app imports: drop --builds, "
                           "--psycopg and --gevent"),
    ("psycopg", "--psycopg", "--uwsgi probes the driver your app imports: drop --builds, "
                             "--psycopg and --gevent"),
    ("gevent", "--gevent", "--uwsgi probes the driver your app imports: drop --builds, "
                           "--psycopg and --gevent"),
    ("gunicorn_config", "--gunicorn-config", "--gunicorn-config goes with --app: uWSGI reads "
                                             "its own options (--uwsgi-cmd \"uwsgi --ini "
                                             "FILE\")"),
)


def plan(request: RunRequest, project: ProjectSettings, profile: Profile) -> KindPlan | None:
    """The user's uWSGI app when ``--uwsgi`` or ``--uwsgi-cmd`` (or ``uwsgi``/``uwsgi_cmd`` in
    pyproject) asks for it, the driver builds under uWSGI for ``--server uwsgi``; else None."""
    app, command = request.options.get("uwsgi"), request.options.get("uwsgi_cmd")
    server = request.options.get("server")
    asked = app is not None or command is not None
    if server not in (None, "gunicorn", "uwsgi"):
        raise ProbeError(f"unknown server {server!r}: choose gunicorn or uwsgi")
    if server is not None and (request.app or request.celery is not None
                               or request.celery_cmd is not None or app is not None):
        raise ProbeError("--server picks the server the built-in driver builds run under: "
                         "drop it (--app runs your app under gunicorn, --uwsgi under uWSGI, "
                         "--celery in a celery worker)")
    if server == "gunicorn":
        if command is not None:
            raise ProbeError("--server gunicorn and --uwsgi-cmd: the builds run under one "
                             "server: drop one")
        return None
    if server == "uwsgi":
        return _builds(request, project, profile, command)
    builds_asked = request.builds is not None or bool(request.psycopg or request.gevent)
    if not asked:
        if (request.app or request.celery is not None or request.celery_cmd is not None
                or builds_asked or not (project.uwsgi or project.uwsgi_cmd)):
            return None  # the command line asked for something else: the project's waits
        if project.uwsgi and project.uwsgi_cmd:
            raise ProbeError(f"{project.source}: uwsgi and uwsgi_cmd both say how to start "
                             "uWSGI: keep one")
        app, command = project.uwsgi, project.uwsgi_cmd
    if app is not None and command is not None:
        raise ProbeError("--uwsgi and --uwsgi-cmd both say how to start uWSGI: give one "
                         "(--uwsgi APP: uWSGI's defaults; --uwsgi-cmd: your own command)")
    for field, _flag, why in _OTHERS:
        if getattr(request, field):
            raise ProbeError(why)
    if request.preload:
        raise ProbeError("--preload is gunicorn's: uWSGI loads the app in its master unless "
                         "lazy-apps is set (say which in --uwsgi-cmd)")
    if request.tasks or request.broker:
        raise ProbeError("--task and --broker go with a celery worker (--celery): a uWSGI "
                         "app's are its routes: use --route PATH")
    texts = request.routes or (project.routes if not asked else ())
    auto = any(str(t).strip().lower() == AUTO for t in texts)
    if request.route_exclude and not auto:
        raise ProbeError("--route-exclude drops routes that --route auto found: add --route "
                         "auto (or leave out the --route you do not want)")
    from geventprobe.kinds.uwsgi import app as uwsgi_app

    target = uwsgi_app.plan(uwsgi_app.UwsgiRequest(
        app=app, command=command, chdir=request.chdir or project.chdir,
        workers=request.workers, greenlets=profile.workload.greenlets,
        routes=tuple(parse_routes([t for t in texts if str(t).strip().lower() != AUTO])),
        auto_routes=auto, route_exclude=tuple(request.route_exclude), dsn=request.dsn))
    return KindPlan(target, dataclasses.replace(profile.workload, workers=target.workers))


def _builds(request: RunRequest, project: ProjectSettings, profile: Profile,
            command: str | None) -> KindPlan:
    """``--server uwsgi``: the built-in builds under uWSGI (our flags, or ``--uwsgi-cmd``)."""
    if request.psycopg or request.gevent:
        raise ProbeError("--psycopg/--gevent run a version matrix under gunicorn: drop "
                         "--server uwsgi (or the versions)")
    if request.preload:
        raise ProbeError("--preload is gunicorn's: under uWSGI the app is loaded in the master "
                         "unless lazy-apps is set (--uwsgi-cmd \"uwsgi --lazy-apps\")")
    if request.routes or request.route_exclude or request.tasks or request.broker:
        raise ProbeError("--route and --task drive your app's routes and tasks: the built-in "
                         "builds have none (drop them, or probe your app with --uwsgi)")
    if request.gunicorn_config:
        raise ProbeError("--gunicorn-config goes with --app: uWSGI reads its own options "
                         "(--uwsgi-cmd \"uwsgi --ini FILE\")")
    if request.calibrate or profile.calibrate:
        raise ProbeError("--calibrate runs its controls under gunicorn: run `geventprobe "
                         "calibrate` on its own, then --server uwsgi without it")
    from geventprobe.core.builds import parse_builds
    from geventprobe.kinds.uwsgi import builds

    chosen, named = parse_builds(request.builds if request.builds is not None
                                 else project.builds)
    # Our flags run the profile's workers; a command of theirs its own processes (or --workers).
    workers = request.workers if command is not None else profile.workload.workers
    target = builds.plan(chosen, named, command=command, chdir=request.chdir, workers=workers,
                         greenlets=profile.workload.greenlets)
    return KindPlan(target, dataclasses.replace(profile.workload, workers=target.conf.processes))
