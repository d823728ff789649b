"""``geventprobe run --server uwsgi``: the built-in driver builds under uWSGI's gevent loop.

The same five builds and baselines as under gunicorn (``core/drivers.py``), each a uWSGI
running the harness app (``worker/harness_app.py``, loaded where uWSGI loads an app, through
``worker/uwsgi_app.py`` like a user's) with the probe in every worker. What decides a build's
class under uWSGI is its flags: by default ``--master --processes W --gevent G
--gevent-early-monkey-patch`` (the patch before the app loads, the setting under which a
driver can cooperate); with ``--uwsgi-cmd "uwsgi --gevent-monkey-patch"`` the user's own
(their ini or flags, without an app: the harness is the app), so the table answers "which
driver builds cooperate under MY uWSGI flags". Every build's uWSGI boots at once, before any is
measured, as gunicorn's do (``drivers.boot_ahead``); its first worker says whether the
build's driver imports in the Python that uWSGI runs.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from dataclasses import dataclass, field

from geventprobe.app.wsgi_run import WorkersRun, run_workers
from geventprobe.core import judge
from geventprobe.core.builds import Availability, Build
from geventprobe.core.drivers import DriverBuilds, boot_ahead, booted_availability
from geventprobe.core.known_errors import Deployment
from geventprobe.core.session import Session
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.kinds.uwsgi import app as uwsgi_app
from geventprobe.kinds.uwsgi import config, server
from geventprobe.record import BuildResult
from geventprobe.settings import Thresholds, Workload

HARNESS_APP = "geventprobe.worker.harness_app:application"
DEFAULT_PATCH = "--gevent-early-monkey-patch"


@dataclass(frozen=True)
class UwsgiBuild:
    """One built-in build under uWSGI with the harness app (a ``Subject``)."""

    build: Build
    program: list[str]
    conf: config.ForProbe
    cwd: str
    booted: server.Server | None = None
    """Its uWSGI, started ahead of its turn (``boot_ahead``); None: started at launch."""

    @property
    def preload(self) -> bool:
        """The harness app is loaded in the master before the fork (no ``lazy-apps``)."""
        return not self.conf.lazy_apps

    def _env(self) -> dict:
        return dict(self.build.env, GEVENTPROBE_BUILD=self.build.name,
                    GEVENTPROBE_UWSGI_SOURCE="harness")

    def launch(self, session: Session, workload: Workload) -> WorkersRun:
        """uWSGI with the harness app for this build; the workers' records."""
        started = time.monotonic()
        booted = self.booted or uwsgi_app.boot(self.program, self.conf, self.cwd, self._env(),
                                               session, workload)
        return run_workers(booted, workload, session.dsn, started=started)

    def boot(self, session: Session, workload: Workload, go_wait_s: float) -> UwsgiBuild:
        """Itself with its uWSGI started now, to be measured in ``go_wait_s`` at most."""
        booted = uwsgi_app.boot(self.program, self.conf, self.cwd, self._env(), session,
                                workload, go_wait_s=go_wait_s)
        session.at_close(booted.discard)
        return dataclasses.replace(self, booted=booted)

    def availability(self, session: Session) -> Availability:
        """Whether its build's driver imports where uWSGI runs (``booted_availability``)."""
        return booted_availability(self.build.name, self.booted, session)

    def judge(self, run: WorkersRun, workload: Workload, thresholds: Thresholds,
              started: float) -> BuildResult:
        """The core's verdict; a blocked build's cause and fix in uWSGI's words."""
        row = judge.judge(self, run, workload, thresholds, started,
                          words=Deployment(**uwsgi_app.WORDS))
        return uwsgi_app.restate(row, self.conf)

    def discard(self) -> None:
        """Stop its uWSGI, started ahead, unmeasured (its build turned out not to import)."""
        if self.booted is not None:
            self.booted.discard()


@dataclass(frozen=True)
class UwsgiBuilds(DriverBuilds):
    """``run --server uwsgi`` (a ``Target``): every requested build under uWSGI, in order."""

    program: list[str] = field(default_factory=list)
    conf: config.ForProbe | None = None
    cwd: str = "."
    command: str = ""
    """The uWSGI command the builds run under, as shown (their --uwsgi-cmd, or ours)."""
    theirs: bool = False
    """The command is the user's (``--uwsgi-cmd``)."""

    def subjects(self, session: Session) -> list[UwsgiBuild]:
        """Every build under this uWSGI configuration, each uWSGI started now."""
        return boot_ahead(session, [UwsgiBuild(b, self.program, self.conf, self.cwd)
                                    for b in self.builds], session.plan.workload)

    def app_record(self) -> dict:
        """The uWSGI configuration the builds ran under (the report's deployment lines)."""
        return {"kind": "uwsgi-builds", "command": self.command,
                "how": "command" if self.theirs else "flags", "chdir": self.cwd,
                **self.conf.record()}


def plan(builds: list[Build], named: bool, *, command: str | None, chdir: str | None,
         workers: int | None, greenlets: int) -> UwsgiBuilds:
    """The builds under uWSGI: our flags, or the user's (``--uwsgi-cmd``, without an app)."""
    cwd = os.path.abspath(chdir or os.getcwd())
    if not os.path.isdir(cwd):
        raise ProbeError(f"--chdir {chdir} is not a directory: pass the directory your "
                         "uWSGI command runs from")
    if command is None:
        argv = [uwsgi_app.program(), "--master", "--processes", str(workers or 1),
                "--gevent", str(greenlets), DEFAULT_PATCH]
        shown = shlex.join(["uwsgi", *argv[1:]])
    else:
        argv = uwsgi_app.command_argv(command)
        shown = redact(command)
    found = config.resolve(argv, cwd, dict(os.environ))
    theirs = config.loaded_app(found)
    if theirs is not None:
        raise ProbeError(f"--server uwsgi runs the built-in builds as the app, and your "
                         f"--uwsgi-cmd loads one ({redact(theirs)}): give uWSGI's flags alone, "
                         "or drop --server to probe your app with --uwsgi-cmd")
    conf = config.for_probe(found, cwd=cwd, workers=workers if command else None,
                            greenlets=greenlets,
                            app=(HARNESS_APP, f"module = {HARNESS_APP}"))
    return UwsgiBuilds(builds=builds, named=named, program=[argv[0]], conf=conf, cwd=cwd,
                       command=shown, theirs=command is not None)
