"""How a run of a celery worker is asked for and planned (``kinds.plan`` calls ``plan``).

``--celery APP`` / ``--celery-cmd`` (or ``celery`` / ``celery_cmd`` in pyproject's
``[tool.geventprobe]``): the user's celery worker, one process under ``-P gevent``, with
its tasks. Every flag that cannot go with it is refused here, one line each (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from geventprobe.errors import ProbeError
from geventprobe.kinds.interface import KindPlan

if TYPE_CHECKING:
    from geventprobe.core.plan import RunRequest
    from geventprobe.kinds.celery import app as celery_app
    from geventprobe.settings import Profile, ProjectSettings

OPTIONS: list = []
"""Its flags are the CLI's own (``--celery``, ``--task``...), from before kinds declared
theirs (``kinds.options``)."""


def plan(request: RunRequest, project: ProjectSettings, profile: Profile) -> KindPlan | None:
    """The user's celery worker when the flags (or the project) ask for it; else None. One
    worker process, and no HTTP route in a celery worker."""
    celery = _celery(request, project, profile.workload.greenlets)
    if celery is None:
        return None
    return KindPlan(celery, dataclasses.replace(profile.workload, workers=1, http_rate=0.0))


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
