"""A command line becomes one frozen plan, once: profile layers, flags, the target.

Pure (the app case reads the example's gunicorn settings in a throwaway child, nothing
else is started): the target each set of flags gets, the DSN's own ``connect_timeout``
applied without changing any profile in place, and the combinations refused up front.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from geventprobe import settings
from geventprobe.app.gunicorn_app import GunicornApp
from geventprobe.core import plan
from geventprobe.core.calibrate import CalibrationOnly
from geventprobe.core.drivers import DriverBuilds
from geventprobe.errors import ProbeError
from geventprobe.kinds.celery.app import CeleryApp
from geventprobe.settings import ProjectSettings
from geventprobe.versions.matrix import VersionMatrix

NONE = ProjectSettings()
EXAMPLES = Path(__file__).parent.parent / "examples"


def request(**flags) -> plan.RunRequest:
    return plan.RunRequest(command=["geventprobe", "run"], **flags)


def test_the_built_in_builds():
    p = plan.for_run(request(builds="binary,psycopg2", workers=2, preload=True), NONE)
    assert isinstance(p.target, DriverBuilds) and p.target.named
    assert [b.name for b in p.target.builds] == ["binary", "psycopg2"]
    assert p.workload.workers == 2 and p.preload and p.target.steps() == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.preload = False


def test_the_dsns_connect_timeout_is_applied_without_changing_a_profile():
    base = settings.resolve(None, None, NONE)
    p = plan.for_run(request(dsn="host=db connect_timeout=7"), NONE)
    assert p.workload.connect_timeout_s == 7
    assert base.workload.connect_timeout_s != 7  # the resolved profile was not changed
    assert settings.resolve(None, None, NONE) == base


def test_a_version_matrix_and_what_it_refuses():
    p = plan.for_run(request(builds="binary", psycopg="3.1.12,3.3.8"), NONE)
    assert isinstance(p.target, VersionMatrix) and p.target.steps() == 2
    with pytest.raises(ProbeError, match="--calibrate cannot be combined with --psycopg"):
        plan.for_run(request(psycopg="3.3.8", calibrate=True), NONE)
    with pytest.raises(ProbeError, match="--app probes the driver your app imports"):
        plan.for_run(request(app="app:application", psycopg="3.3.8"), NONE)


def test_the_users_app_takes_its_workers_and_preload_from_its_config():
    p = plan.for_run(request(app="app:application", chdir=str(EXAMPLES / "preload")), NONE)
    assert isinstance(p.target, GunicornApp) and p.target.steps() == 1
    assert p.preload is True and p.workload.workers == p.target.workers == 2
    assert p.target.app_record()["app"] == "app:application"
    assert list(p.target.imports()) == []


def test_calibrate_alone():
    p = plan.for_calibrate(["geventprobe", "calibrate"], workers=1)
    assert isinstance(p.target, CalibrationOnly) and p.calibrate and p.target.steps() == 0


CELERY = EXAMPLES / "celery"


def test_the_users_celery_worker_and_its_tasks():
    p = plan.for_run(request(celery="tasks", chdir=str(CELERY / "shared_connection"),
                             tasks=("tasks.query",), task_kwargs=('{"seconds": 0.2}',),
                             greenlets=8), NONE)
    target = p.target
    assert isinstance(target, CeleryApp) and target.steps() == 1 and not p.preload
    assert target.command.argv[-9:-3] == ("worker", "-P", "gevent", "-c", "8", "-l")
    assert [(t.name, t.kwargs) for t in target.tasks] == [("tasks.query", {"seconds": 0.2})]
    # One worker process, no HTTP route in it: the server's budget is one worker's.
    assert p.workload.workers == 1 and p.workload.http_rate == 0
    record = target.app_record()
    assert record["kind"] == "celery" and record["tasks"] == ['tasks.query(seconds=0.2)']
    custom = plan.for_run(request(celery_cmd="python worker.py", greenlets=8,
                                  chdir=str(CELERY / "worker_main")), NONE).target
    assert custom.command.argv == ("python", "worker.py") and custom.greenlets == 8


def test_the_projects_celery_keys(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.geventprobe]\ncelery = "tasks"\n'
        'tasks = ["tasks.a", {name = "tasks.b", args = [1], kwargs = {x = true}}]\n')
    project = settings.load_project(str(tmp_path))
    target = plan.for_run(request(), project).target
    assert isinstance(target, CeleryApp) and target.command.cwd == str(tmp_path)
    assert [(t.name, t.args, t.kwargs) for t in target.tasks] == [
        ("tasks.a", (), {}), ("tasks.b", (1,), {"x": True})]
    # The command line's --task replaces the project's; --builds probes the built-in builds.
    assert [t.name for t in plan.for_run(request(tasks=("tasks.c",)), project).target.tasks] \
        == ["tasks.c"]
    assert isinstance(plan.for_run(request(builds="binary"), project).target, DriverBuilds)
    (tmp_path / "pyproject.toml").write_text('[tool.geventprobe]\ntasks = [{args = [1]}]\n')
    with pytest.raises(ProbeError, match="tasks must list task names or tables"):
        settings.load_project(str(tmp_path))


@pytest.mark.parametrize(("flags", "message"), [
    (dict(celery="tasks", app="app:application"), "--celery probes a celery worker and --app"),
    (dict(celery="tasks", celery_cmd="python w.py"), "--celery and --celery-cmd both"),
    (dict(celery="tasks", builds="binary"), "drop --builds, --psycopg and --gevent"),
    (dict(celery="tasks", routes=("/login",)), "use --task NAME"),
    (dict(celery="tasks", preload=True), "--preload is gunicorn's"),
    (dict(celery="tasks", workers=2), "--workers is gunicorn's"),
    (dict(celery="tasks", gunicorn_config="g.py"), "--gunicorn-config goes with --app"),
    (dict(tasks=("tasks.query",)), "--task goes with a celery worker: add --celery APP"),
    (dict(broker="redis://127.0.0.1/0"), "--broker goes with a celery worker"),
    (dict(celery="tasks", task_args=("[1]",)), "--task-args and --task-kwargs go with --task"),
    (dict(celery="tasks", tasks=("t.a",), task_args=("{1",)), "--task-args '{1' is not JSON"),
    (dict(celery="tasks", tasks=("t.a",), task_args=('{"a": 1}',)), "is not a JSON array"),
    (dict(celery="tasks", tasks=("t.a",), task_kwargs=("[1]",)), "is not a JSON object"),
    (dict(celery="tasks", tasks=("t.a", "t.b", "t.c"), task_args=("[1]", "[2]")),
     "--task-args is given 2 times for 3 --task"),
    (dict(celery="tasks", tasks=("not a name",)), "is not a task name"),
    (dict(celery="tasks", broker="mysql://db/0"), "is not a broker geventprobe speaks to"),
    (dict(celery="tasks", chdir="/no/such/dir"), "--chdir /no/such/dir is not a directory"),
    (dict(celery="-A"), "give the app as celery's -A takes it"),
    (dict(celery_cmd="python 'unclosed"), "does not parse"),
    # Issue 25 row 1: an unset $VAR in CI gives an empty value; it is refused, never a run
    # of the built-in builds (which ended "... cooperate with gevent; exit 0").
    (dict(celery_cmd=""), "--celery-cmd is empty"),
    (dict(celery=""), "--celery '': give the app as celery's -A takes it"),
    (dict(celery="  "), "give the app as celery's -A takes it"),
    (dict(celery="", tasks=("tasks.query",)), "--celery '': give the app"),
    # Issue 25 row 10: a worker in the background is one geventprobe can neither watch nor
    # stop (--detach left one running); --pidfile and --logfile write the user's files.
    (dict(celery_cmd="celery -A tasks worker -P gevent -c 16 --detach"),
     "--celery-cmd: --detach forks the worker into the background"),
    (dict(celery_cmd="celery -A tasks worker -P gevent -D"), "--detach forks the worker"),
    (dict(celery_cmd="celery -A tasks worker -P gevent --pidfile=/run/w.pid"),
     "--pidfile writes a pid file of yours"),
    (dict(celery_cmd="celery -A tasks worker -P gevent -f /var/log/w.log"),
     "--logfile sends the worker's log into a file of yours"),
    (dict(celery_cmd="sh -c 'exec celery -A tasks worker -P gevent --logfile w.log'"),
     "--logfile sends the worker's log"),
    (dict(celery_cmd="celery multi start w1 -A tasks -P gevent"),
     "`celery multi` starts workers in the background"),
], ids=["app", "both", "builds", "route", "preload", "workers", "gunicorn-config",
        "task-alone", "broker-alone", "args-without-task", "args-not-json", "args-not-array",
        "kwargs-not-object", "args-count", "task-name", "broker-scheme", "chdir", "app-flag",
        "command-quotes", "command-empty", "app-empty", "app-blank", "app-empty-with-task",
        "detach", "detach-short", "pidfile", "logfile-short", "logfile-in-sh", "multi"])
def test_what_a_celery_run_refuses(flags, message):
    with pytest.raises(ProbeError) as info:
        plan.for_run(request(**flags), NONE)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_empty_pidfile_is_no_pid_file():
    """`--pidfile=` is celery's documented way to write none (containers): not refused."""
    command = f"{sys.executable} -m celery -A tasks worker -P gevent --pidfile="
    target = plan.for_run(request(celery_cmd=command), NONE).target
    assert target.command.argv[-1] == "--pidfile="


def test_an_empty_fail_on_is_refused_as_an_empty_builds_is():
    """Issue 25, debatable, decided: --fail-on "" meant the default in silence."""
    with pytest.raises(ProbeError, match=r"^--fail-on is empty: name the verdicts"):
        plan.for_run(request(fail_on=""), NONE)
    assert plan.for_run(request(fail_on="none"), NONE).fail_on == ()
