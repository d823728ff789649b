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
    """The user's uWSGI app when ``--uwsgi`` or ``--uwsgi-cmd`` asks for it; else None."""
    app, command = request.options.get("uwsgi"), request.options.get("uwsgi_cmd")
    if app is None and command is None:
        return None
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
    texts = request.routes or ()
    if any(str(t).strip().lower() == AUTO for t in texts) or request.route_exclude:
        raise ProbeError("--route auto finds routes through gunicorn's loading of your app: "
                         "under uWSGI name them, e.g. --route /login --route /orders")
    from geventprobe.kinds.uwsgi import app as uwsgi_app

    target = uwsgi_app.plan(uwsgi_app.UwsgiRequest(
        app=app, command=command, chdir=request.chdir or project.chdir,
        workers=request.workers, greenlets=profile.workload.greenlets,
        routes=tuple(parse_routes(list(texts))), dsn=request.dsn))
    return KindPlan(target, dataclasses.replace(profile.workload, workers=target.workers))
