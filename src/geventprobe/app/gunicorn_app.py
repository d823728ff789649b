"""``geventprobe run --app``: the user's own app, under their own gunicorn config. No printing.

What blocks depends on the deployment (docs/field-facts.md): the config file and
its hooks, ``--preload``, ``GUNICORN_CMD_ARGS``, what the app imports and when,
where psycogreen is applied. So this mode starts gunicorn as the user deploys it
and injects the probe without touching their code:

1. ``plan()`` reads the effective settings in a throwaway child
   (``worker/inspect_conf.py``: gunicorn itself loads their config through
   ``worker/app_conf.py``, then ``GUNICORN_CMD_ARGS``, then our command line).
   A config that fails is their error, shown in their words (exit 2).
2. It decides the few things it must override, and records each: the gevent
   worker class only when theirs is not gevent-based; ``--bind 127.0.0.1:0`` (a
   free loopback port, never their public one); the error log to geventprobe's
   log; ``--max-requests 0`` so no worker is recycled mid-probe.
3. The result, a ``GunicornApp``, is the run's target and its one subject
   (``core/target.py``): ``launch`` starts their gunicorn with ``app_conf.py``, which
   runs their config, chains their hooks with ours and starts the probe in
   ``post_worker_init`` after theirs; the facts say which driver their workers really
   use, its wait function or callback, what gevent patched and who imported the driver
   when. ``judge`` judges the workers, then their routes (``route_rules.py``); ``headline``
   speaks of their app.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from geventprobe.app import route_finder, route_rules
from geventprobe.app.routes import Route
from geventprobe.app.wsgi_run import AppTarget, WorkersRun, routes_timeout_s, run_workers
from geventprobe.core import causes, judge, rules
from geventprobe.core.builds import Build
from geventprobe.core.known_errors import Deployment
from geventprobe.core.session import Session
from geventprobe.dsn import database_url, redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children, gunicorn_workers
from geventprobe.record import BuildResult, Calibration, Verdict
from geventprobe.settings import Thresholds, Workload
from geventprobe.worker import record
from geventprobe.worker.record import GunicornSettings

WRAPPER_CONFIG = "python:geventprobe.worker.app_conf"
APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:.+)?$")
"""``MODULE:CALLABLE`` (or a module alone), as gunicorn and uWSGI take an app."""

DEPLOYMENT_WORDS = {"concurrency_setting": "gunicorn's worker_connections (1000 by default)",
                    "unit": "request"}
"""How the causes of a route name the setting that bounds a gunicorn worker's concurrency,
and what one of its greenlets serves (``core/known_errors.Deployment``)."""


@dataclass(frozen=True)
class AppRequest:
    """What the user asked for (flags and ``[tool.geventprobe]``), not yet checked."""

    app: str
    """``MODULE:CALLABLE``, as given to gunicorn."""
    gunicorn_config: str | None = None
    """Their config file (or ``python:module``); None: what gunicorn would find."""
    chdir: str | None = None
    """Where gunicorn runs (their project); None: the current directory."""
    workers: int | None = None
    """``--workers`` given on our command line: overrides theirs."""
    preload: bool = False
    """``--preload`` given on our command line (theirs, in their config, applies anyway)."""
    inspect_timeout_s: float = 60.0
    routes: tuple[Route, ...] = ()
    """``--route``: the app's own routes to drive after the driver probe (``routes.py``)."""
    auto_routes: bool = False
    """``--route auto``: also the app's parameterless GET routes (``route_finder.py``)."""
    route_exclude: tuple[str, ...] = ()
    """``--route-exclude``: globs of found routes to leave out."""
    dsn: str | None = None
    """``--dsn``: the app imported to list its routes gets it as ``DATABASE_URL``, as its
    workers will (None: the embedded server, not started yet)."""


@dataclass(frozen=True)
class GunicornApp(AppTarget):
    """The user's app under their gunicorn config: the run's target and its one subject."""

    build: Build
    """The one row: their app (``MODULE:CALLABLE``)."""
    argv: list[str]
    cwd: str
    workers: int
    """Workers their gunicorn will start (their setting, or ``--workers``)."""
    preload: bool
    """Effective preload: theirs or ours."""
    deployment: dict
    """What the report shows about the deployment (``RunResult.app``)."""
    base_env: dict = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    """The app's routes to drive after the driver probe."""

    def env(self, dsn: str) -> dict[str, str]:
        """Environment of their gunicorn, on top of ours, for a server at ``dsn``."""
        # Their app needs a database too: the usual variable, unless they set it already.
        return dict(self.base_env, **database_url(dsn))

    # -- as the run's subject

    def launch(self, session: Session, workload: Workload) -> WorkersRun:
        """Their gunicorn, their config and hooks, our probe in every worker."""
        env = dict(self.build.env, GEVENTPROBE_BUILD=self.build.name, **self.env(session.dsn))
        started = time.monotonic()
        routes = list(self.routes)
        server = gunicorn_workers.boot(
            env, workload, session.dsn, self.preload, argv=self.argv, cwd=self.cwd,
            keep_cmd_args=True, thresholds=session.plan.thresholds,
            routes_timeout_s=routes_timeout_s(routes, workload),
            timeout_s=self.deployment.get("timeout"))
        return run_workers(server, workload, session.dsn, routes=routes, started=started)

    def judge(self, run: WorkersRun, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The workers' figures through the verdict rules, then each ``--route``'s verdict,
        its causes in this deployment's words."""
        return judge.judge(self, run, workload, thresholds, started,
                           routes=lambda r: route_rules.judge_all(r.routes, thresholds,
                                                                  self.deployment_of(r)))

    def deployment_of(self, run: WorkersRun) -> Deployment:
        """What the routes' causes depend on: preload, the app's directory (frames are shown
        relative to it), and the driver's own cause when its facts say it waits in C."""
        first = run.results[0] if run.results else None
        facts = (first.facts_after or first.facts) if first is not None else run.ready_facts
        return Deployment(preload=self.preload, **DEPLOYMENT_WORDS, root=self.cwd,
                          driver_blocking=causes.driver_blocking(facts or {}, self.preload))

    # -- as the run's target

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The summary in the app's words (``summary``)."""
        return summary(self.build.name, rows, code, calibration)


def shown_cmd_args(text: str | None) -> str | None:
    """``GUNICORN_CMD_ARGS`` for the report: ``-e KEY=VALUE`` values and passwords masked."""
    if not text:
        return None
    import shlex

    try:
        words = shlex.split(text)
    except ValueError:
        return "(unparsable)"
    out, mask_next = [], False
    for word in words:
        if mask_next and "=" in word:
            word = word.split("=", 1)[0] + "=***"
        elif word.startswith(("--env=", "-e")) and "=" in word[2:]:
            head, _, rest = word.partition("=") if word.startswith("--env=") else ("", "", word)
            word = (f"{head}={rest.split('=', 1)[0]}=***" if head
                    else word.split("=", 1)[0] + "=***")
        mask_next = word in ("-e", "--env")
        out.append(word)
    return redact(shlex.join(out))


def _shown(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith(".." + os.sep + "..") else rel


def _check(request: AppRequest) -> tuple[str, str | None, str | None]:
    """(chdir, config for gunicorn, config as shown): refuse bad paths and specs."""
    if not APP_SPEC.match(request.app):
        raise ProbeError(f"--app {request.app!r} is not MODULE:CALLABLE: pass what you give "
                         "gunicorn, e.g. --app myproject.wsgi:application")
    chdir = os.path.abspath(request.chdir or os.getcwd())
    if not os.path.isdir(chdir):
        raise ProbeError(f"--chdir {request.chdir} is not a directory: pass your project's "
                         "directory (where you run gunicorn)")
    config = request.gunicorn_config
    if config is None or config.startswith("python:"):
        return chdir, config, config
    path = config[len("file:"):] if config.startswith("file:") else config
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ProbeError(f"cannot read --gunicorn-config {config}: no such file: pass the "
                         "config file you give gunicorn with -c")
    return chdir, path, _shown(path)


def _base_args(request: AppRequest) -> list[str]:
    args = ["--config", WRAPPER_CONFIG,
            # A free loopback port: never their public bind, never a port in use.
            "--bind", "127.0.0.1:0",
            # Their app's errors must reach our log, which explains failures.
            "--error-logfile", "-",
            # A worker recycled mid-probe would take its report with it.
            "--max-requests", "0"]
    if request.workers is not None:
        args += ["--workers", str(request.workers)]
    if request.preload:
        args.append("--preload")
    return args


def _inspect(args: list[str], chdir: str, env: dict[str, str], timeout: float
             ) -> GunicornSettings:
    """The effective settings, read by gunicorn itself in a throwaway child."""
    tmp = children.make_temp_dir("geventprobe-inspect-")
    try:
        out = os.path.join(tmp, "settings.json")
        proc = children.spawn([sys.executable, "-m", "geventprobe.worker.inspect_conf", out, "--",
                            *args], env=env, cwd=chdir, log_path=os.path.join(tmp, "log"))
        with children.running(proc, signal.SIGKILL, timeout=1):
            code = children.wait(proc, timeout)
        if code is None:
            raise ProbeError(f"reading your gunicorn config did not finish within {timeout:.0f} s "
                             "(does the config file wait for something?)")
        try:
            return record.read(GunicornSettings, out)
        except record.RecordError as exc:
            raise ProbeError(f"cannot read your gunicorn settings: {exc}") from None
        except (OSError, ValueError):
            with open(os.path.join(tmp, "log"), errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            raise ProbeError("reading your gunicorn config failed: "
                             + redact(lines[-1] if lines else f"exit code {code}")) from None
    finally:
        children.remove_temp_dir(tmp)


def plan(request: AppRequest) -> GunicornApp:
    """Check the request, read the effective gunicorn settings, and build the command."""
    chdir, config, shown = _check(request)
    base_env: dict[str, str] = {}
    if config:
        base_env["GEVENTPROBE_USER_CONFIG"] = config
    env = dict(os.environ, **base_env, PYTHONUNBUFFERED="1")
    args = _base_args(request)
    settings = _inspect([*args, request.app], chdir, env, request.inspect_timeout_s)
    if not settings.ok:
        error = redact(settings.error or "unknown error")
        if settings.stage == "config":
            default = os.path.join(chdir, "gunicorn.conf.py")
            where = settings.config or shown or (
                _shown(default) if os.path.exists(default) else "(from GUNICORN_CMD_ARGS)")
            raise ProbeError(f"your gunicorn config {where} failed to load: {error}: fix it, "
                             "then check it with: gunicorn --check-config -c CONFIG APP")
        raise ProbeError(f"gunicorn refused your settings: {error}: fix the config file or "
                         "GUNICORN_CMD_ARGS, then check with: gunicorn --check-config ...")
    if settings.daemon:
        raise ProbeError("your settings ask gunicorn to daemonize (-D / daemon = True in "
                         "GUNICORN_CMD_ARGS): geventprobe must own the processes it starts: "
                         "leave daemon off for the check")
    found = settings.config
    if found and not found.startswith("python:"):
        # GUNICORN_CMD_ARGS's -c is relative to where gunicorn runs, not to where we do.
        found = os.path.join(chdir, found[len("file:"):] if found.startswith("file:") else found)
    if found and not config:
        base_env["GEVENTPROBE_USER_CONFIG"] = found
        shown = found if found.startswith("python:") else _shown(found)
    if shown:
        base_env["GEVENTPROBE_USER_CONFIG_SHOWN"] = shown
    overrides = ["bind 127.0.0.1:0: a free loopback port, for the probe's HTTP requests",
                 "error log to geventprobe's own log, which explains failures"]
    if settings.max_requests > 0:
        overrides.append(f"max_requests 0 (yours: {settings.max_requests}): a worker "
                         "recycled mid-probe would lose its report")
    forced = not settings.gevent
    if forced:
        args += ["--worker-class", "gevent"]
        overrides.append(f"worker class gevent (yours: {settings.worker_class}): the "
                         "probe measures gevent workers")
    if request.workers is not None:
        overrides.append(f"workers {request.workers} (--workers; yours: see your config)")
    argv = [sys.executable, "-m", "gunicorn", *args, request.app]
    if request.workers is None and settings.workers < 1:
        # gunicorn would start a master and no worker: nothing to probe, and nothing to wait for.
        raise ProbeError(f"your gunicorn settings ask for {settings.workers} workers "
                         f"(workers = {settings.workers} in {shown or 'GUNICORN_CMD_ARGS'}): "
                         "gunicorn would start no worker to probe: set workers to 1 or more, "
                         "or pass --workers N")
    routes, found = tuple(request.routes), None
    if request.auto_routes:  # the app imported once, in a child, as gunicorn will import it
        found_env = dict(env, **database_url(request.dsn))
        found = route_finder.find([*args, request.app], chdir, found_env,
                                  request.inspect_timeout_s, request.route_exclude,
                                  server_known=bool(request.dsn))
        routes = tuple(dict.fromkeys([*found.routes, *routes]))
    _check_request_lines(routes, settings.limit_request_line)
    workers = int(settings.workers)
    preload = settings.preload
    deployment = {
        "app": request.app,
        "gunicorn_config": shown,
        "chdir": chdir,
        "worker_class": "gevent" if forced else settings.worker_class,
        "their_worker_class": settings.worker_class,
        "worker_class_forced": forced,
        "workers": workers,
        "preload": preload,
        "timeout": settings.timeout,
        "hooks": list(settings.hooks),
        "gunicorn_cmd_args": shown_cmd_args(os.environ.get("GUNICORN_CMD_ARGS")),
        "database_url_from_geventprobe": not os.environ.get("DATABASE_URL"),
        "overrides": overrides,
        "routes": [str(r) for r in routes],
    }
    if found is not None:
        deployment["routes_found"] = found.record()
    config_words = f"gunicorn config {shown}" if shown else "no gunicorn config file"
    build = Build(name=request.app, baseline=False, expected=None, env=dict(base_env),
                  description=f"your app {request.app}, {config_words}")
    return GunicornApp(build=build, argv=argv, cwd=chdir, workers=workers, preload=preload,
                       deployment=deployment, base_env=base_env, routes=routes)


def _check_request_lines(routes: Sequence[Route], limit: int) -> None:
    """Refuse a route whose request line gunicorn would answer with 414 before the app sees it
    (``limit_request_line``: 0 is unlimited, anything above 8190 is 8190)."""
    if limit <= 0:
        return
    limit = min(limit, 8190)
    for route in routes:
        line = route.request_line()
        if len(line) > limit:
            shown = str(route) if len(str(route)) <= 60 else str(route)[:57] + "..."
            raise ProbeError(
                f"--route {shown!r} makes a request line of {len(line):,} bytes, longer than "
                f"gunicorn's limit_request_line ({limit}): gunicorn would answer 414 to every "
                "request before your app sees it: shorten the route (its query string), or "
                "raise limit_request_line in your gunicorn config")


def summary(app_name: str, rows: list[BuildResult], code: int,
            calibration: Calibration | None, where: str = "under this gunicorn config") -> str:
    """The verdict sentence of an app's run, in the app's words (the drivers' summary,
    ``rules.summary``, when the app's row has none of its own: UNAVAILABLE, INCONCLUSIVE);
    ``where``: the server's words for the deployment (a uWSGI app's own)."""
    app = next((b for b in rows if b.build == app_name), None)
    if app is None:
        return rules.summary(rows, code)
    driver = app.facts.get("driver")
    version = (app.facts.get(driver) or {}).get("version") if driver else None
    if app.verdict is Verdict.OK:
        text = (f"your app {app.build} cooperates with gevent {where}"
                + (f" ({driver} {version})" if driver else ""))
    elif app.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT):
        text = f"your app {app.build} is {app.verdict} {where}"
        if app.cause:
            text += f": {app.cause}"
        if code == 0:
            text += " (not failing: --fail-on leaves it out)"
    elif app.verdict is Verdict.ERROR:
        text = f"the probe failed in your app's workers: {app.error or app.cause}"
    else:
        return rules.summary(rows, code)
    causes = {r.cause for r in app.routes if r.verdict is Verdict.ERROR}
    if len(app.routes) > 1 and len(causes) == 1 and all(
            r.verdict is Verdict.ERROR for r in app.routes):  # one reason for all: said once
        text += (f"; routes: {', '.join(r.shown for r in app.routes)} ERROR "
                 f"({causes.pop()})")
    elif app.routes:
        text += "; routes: " + ", ".join(_route_words(r) for r in app.routes)
    if calibration is not None and not calibration.passed:
        text = f"INCONCLUSIVE: calibration failed: {calibration.reason}; {text}"
    return text


def _route_words(route) -> str:
    """``GET /query SERIALIZED at app.py:34 in application``: the verdict and the user's line
    the cause names (the cause itself is in the route's details)."""
    name = route.shown
    if route.verdict is Verdict.OK:
        answered = f", but answered {route.lone_status}" if route.note else ""
        return f"{name} OK{answered}"
    where = (route.error_at if route.verdict is Verdict.FAILING else
             route.waited_at[0].where if route.waited_at else
             route.blocked_by[0].user_frame if route.blocked_by else None)
    if where:
        return f"{name} {route.verdict} at {where.split(': ', 1)[0]}"
    return f"{name} {route.verdict}" + (f" ({route.cause})" if route.cause else "")
