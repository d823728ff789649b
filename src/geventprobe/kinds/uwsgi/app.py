"""``geventprobe run --uwsgi APP`` / ``--uwsgi-cmd``: the user's app under their uWSGI.

``plan`` resolves their configuration the way uWSGI does (``config.resolve``) and keeps all
of it but the few changes the probe needs (``config.for_probe``, each recorded). The
result, a ``UwsgiApp``, is the run's target and its one subject (``core/target.py``):
``launch`` starts their uWSGI with the probe's hook imported first and their app wrapped
(``server.boot``; ``worker/uwsgi_hook.py``, ``worker/uwsgi_app.py``) and runs the same
phases as a gunicorn worker (``app/wsgi_run.run_workers``); ``judge`` is the core's, then
the driver's cause and fix in uWSGI's words (``causes.py``) and the routes' verdicts.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass

from geventprobe.app import gunicorn_app, route_finder, route_rules
from geventprobe.app.routes import Route
from geventprobe.app.wsgi_run import AppTarget, WorkersRun, routes_timeout_s, run_workers
from geventprobe.core import judge
from geventprobe.core.builds import Build
from geventprobe.core.known_errors import Deployment
from geventprobe.core.session import Session
from geventprobe.dsn import database_url, redact
from geventprobe.errors import ProbeError
from geventprobe.kinds.uwsgi import causes, config, server
from geventprobe.record import BuildResult, Calibration, Verdict
from geventprobe.settings import Thresholds, Workload
from geventprobe.versions import venvs

WORDS = {"concurrency_setting": "uWSGI's --gevent N (the async cores of each worker)",
         "unit": "request",
         "worker_starts": "at import in the module uWSGI loads, or in a uwsgidecorators.postfork "
                          "function",
         "master": "the uWSGI master",
         "preloaded": "uWSGI loads the app there unless lazy-apps is set",
         "unpreload": "use --gevent-early-monkey-patch (uWSGI then patches before it loads the "
                      "app)",
         "patched": "--gevent-monkey-patch patched the worker",
         "early_code": "an --import module or a postfork function",
         "fork_hook": "a uwsgidecorators.postfork function",
         "opened_in_worker": "a uwsgidecorators.postfork function (with "
                             "--gevent-early-monkey-patch: patched by then)",
         "killer": "uWSGI's harakiri",
         "kills": "uWSGI's harakiri killed worker {pids}",
         "timeout": "uWSGI's harakiri",
         "timeout_flag": "harakiri"}
"""How the causes of a route name the setting that bounds a uWSGI worker's concurrency
(``core/known_errors.Deployment``)."""


@dataclass(frozen=True)
class UwsgiRequest:
    """What the user asked for, not yet checked."""

    app: str | None = None
    """``--uwsgi``: ``MODULE:CALLABLE`` or a WSGI file, under uWSGI's defaults."""
    command: str | None = None
    """``--uwsgi-cmd``: their own command (``uwsgi --ini uwsgi.ini``)."""
    chdir: str | None = None
    workers: int | None = None
    greenlets: int = 16
    routes: tuple[Route, ...] = ()
    auto_routes: bool = False
    """``--route auto``: also the app's parameterless GET routes (``route_finder.py``)."""
    route_exclude: tuple[str, ...] = ()
    dsn: str | None = None
    inspect_timeout_s: float = 60.0
    """How long importing the app to list its routes may take."""


@dataclass(frozen=True)
class UwsgiApp(AppTarget):
    """The user's app under their uWSGI: the run's target and its one subject."""

    build: Build
    program: list[str]
    """The uWSGI program their command names (``uwsgi``, ``/opt/bin/uwsgi``)."""
    conf: config.ForProbe
    cwd: str
    deployment: dict
    routes: tuple[Route, ...] = ()

    @property
    def preload(self) -> bool:
        """The app is loaded in the master before the fork (no ``lazy-apps``)."""
        return not self.conf.lazy_apps

    @property
    def workers(self) -> int:
        return self.conf.processes

    def launch(self, session: Session, workload: Workload) -> WorkersRun:
        """Their uWSGI, their options, our probe in every worker."""
        env = dict(self.build.env, GEVENTPROBE_BUILD=self.build.name)
        return launch(self.program, self.conf, self.cwd, env, session, workload, self.routes)

    def judge(self, run: WorkersRun, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The core's verdict; the driver's cause and fix in uWSGI's words; the routes."""
        row = judge.judge(self, run, workload, thresholds, started,
                          routes=lambda r: route_rules.judge_all(r.routes, thresholds,
                                                                 self.deployment_of(r)),
                          words=Deployment(**WORDS))
        return restate(row, self.conf)

    def deployment_of(self, run: WorkersRun) -> Deployment:
        """What the routes' causes depend on, in uWSGI's words."""
        first = run.results[0] if run.results else None
        facts = (first.facts_after or first.facts) if first is not None else run.ready_facts
        return Deployment(preload=self.preload, **WORDS, root=self.cwd,
                          driver_blocking=causes.driver_blocking(facts or {},
                                                                 self.conf.options))

    # -- as the run's target

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The summary in the app's words, uWSGI's for the deployment."""
        return gunicorn_app.summary(self.build.name, rows, code, calibration,
                                    where="under this uWSGI configuration")


def launch(program: list[str], conf: config.ForProbe, cwd: str, env: dict, session: Session,
           workload: Workload, routes: tuple[Route, ...] = ()) -> WorkersRun:
    """uWSGI as ``conf`` says, the probe in every worker, driven through the run's phases."""
    started = time.monotonic()
    booted = boot(program, conf, cwd, env, session, workload, routes)
    return run_workers(booted, workload, session.dsn, routes=list(routes), started=started)


def boot(program: list[str], conf: config.ForProbe, cwd: str, env: dict, session: Session,
         workload: Workload, routes: tuple[Route, ...] = (), go_wait_s: float = 0.0
         ) -> server.Server:
    """uWSGI started as ``conf`` says, its workers booting, to be told go within
    ``go_wait_s`` (``server.boot``)."""
    env = dict(env, **database_url(session.dsn))
    # The uWSGI of their environment may run another Python than ours (geventprobe
    # installed with pipx, uWSGI in their project's venv): the probe's in-worker code
    # reaches it through a shim on PYTHONPATH that holds that package alone (measured:
    # without it, "No module named 'geventprobe'" and uWSGI exits). It stays until the
    # session ends: a uWSGI booted ahead imports from it in its turn.
    shim = session.enter(venvs.worker_shim())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH")) if p)
    return server.boot(program, conf.ini, conf.app, env, workload, session.dsn, cwd=cwd,
                       harakiri=conf.harakiri, thresholds=session.plan.thresholds,
                       routes_timeout_s=routes_timeout_s(list(routes), workload),
                       go_wait_s=go_wait_s)


def restate(row: BuildResult, conf: config.ForProbe) -> BuildResult:
    """A BLOCKING row's cause and fix in uWSGI's words (the core's speak gunicorn's)."""
    if row.verdict is not Verdict.BLOCKING:
        return row
    fired = {e.phase for e in row.evidence if e.fired}
    if any(e.rule == "worker-timeout" and e.fired for e in row.evidence):
        found = causes.harakiri(row.facts, conf.options, conf.harakiri)
    elif "waits" not in fired and "connect" in fired:
        found = causes.connect_blocking(row.facts, conf.options)
    else:
        found = causes.driver_blocking(row.facts, conf.options)
    if found is None:
        return row
    return dataclasses.replace(row, cause=found[0], advice=found[1])


def program() -> str:
    """``uwsgi`` as the user would run it: on PATH, or beside this Python (a venv's)."""
    beside = os.path.join(os.path.dirname(sys.executable), "uwsgi")
    found = shutil.which("uwsgi") or (beside if os.access(beside, os.X_OK) else None)
    if found is None:
        raise ProbeError("uWSGI is not installed here: pip install \"geventprobe[uwsgi]\" (it "
                         "brings pyuwsgi), or put uwsgi on PATH, or name it in --uwsgi-cmd")
    return found


def command_argv(command: str) -> list[str]:
    """``--uwsgi-cmd`` as an argv, its ``uwsgi`` found as the user would run it."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ProbeError(f"cannot read --uwsgi-cmd: {exc}: quote it as you would in a "
                         "shell, e.g. --uwsgi-cmd \"uwsgi --ini uwsgi.ini\"") from None
    if not argv:
        raise ProbeError("--uwsgi-cmd is empty: give the command that starts your uWSGI, "
                         "e.g. --uwsgi-cmd \"uwsgi --ini uwsgi.ini\"")
    if os.path.basename(argv[0]) in ("uwsgi", "pyuwsgi") and "/" not in argv[0]:
        argv[0] = program()
    return argv


def _command(request: UwsgiRequest) -> list[str]:
    """The command whose configuration is probed: theirs, or uWSGI's defaults for an app."""
    if request.command is not None:
        return command_argv(request.command)
    app = request.app or ""
    loader = ("--wsgi-file" if app.endswith(".py") or os.sep in app else "--module")
    if loader == "--module" and not gunicorn_app.APP_SPEC.match(app):
        raise ProbeError(f"--uwsgi {app!r} is neither MODULE:CALLABLE nor a .py file: pass "
                         "what you give uWSGI, e.g. --uwsgi myproject.wsgi:application")
    return [program(), "--master", "--processes", str(request.workers or 1),
            "--gevent", str(request.greenlets), loader, app]


def plan(request: UwsgiRequest) -> UwsgiApp:
    """Resolve their uWSGI configuration and build the run's."""
    cwd = os.path.abspath(request.chdir or os.getcwd())
    if not os.path.isdir(cwd):
        raise ProbeError(f"--chdir {request.chdir} is not a directory: pass your project's "
                         "directory (where you run uWSGI)")
    argv = _command(request)
    env = dict(os.environ, **database_url(request.dsn))
    found = config.resolve(argv, cwd, env)
    probe = config.for_probe(found, cwd=cwd, workers=request.workers,
                             greenlets=request.greenlets)
    shown = (redact(request.command) if request.command is not None
             else f"uwsgi {probe.shown_app} (uWSGI's defaults)")
    routes, found_routes = request.routes, None
    if request.auto_routes:  # the app imported once, in a child, as uWSGI will import it
        found_routes = _found_routes(request, found, probe, cwd, env)
        routes = tuple(dict.fromkeys([*found_routes.routes, *routes]))
    deployment = {
        "kind": "uwsgi",
        "app": probe.shown_app,
        "command": shown,
        "chdir": cwd,
        **probe.record(),
        "harakiri": probe.options["harakiri"],
        "routes": [str(r) for r in routes],
    }
    if found_routes is not None:
        deployment["routes_found"] = found_routes.record()
    name = request.app or probe.shown_app.split(" = ", 1)[1]
    build = Build(name=name, baseline=False, expected=None, env={},
                  description=f"your app {name} under uWSGI ({shown})")
    return UwsgiApp(build=build, program=[argv[0]], conf=probe, cwd=cwd,
                    deployment=deployment, routes=routes)


def _found_routes(request: UwsgiRequest, found: config.Resolved, probe: config.ForProbe,
                  cwd: str, env: dict) -> route_finder.Found:
    """``--route auto``: their app's routes, listed in a child that imports it the way their
    uWSGI will: from their ``chdir``, with their ``env`` and ``pythonpath`` options."""
    their_env = dict(env)
    for key, value in found.options:
        if key == "env" and "=" in value:
            name, _, text = value.partition("=")
            their_env[name] = text
    paths = [v for k, v in found.options if k in ("pythonpath", "python-path", "pp")]
    return route_finder.find(["--wsgi", probe.app, *paths],
                             os.path.join(cwd, found.get("chdir") or ""), their_env,
                             request.inspect_timeout_s, request.route_exclude,
                             server_known=bool(request.dsn))
