"""run_celery on real celery -P gevent workers, real redis-server, real PostgreSQL.

Three of the examples under examples/celery/, each started the way its README says, and
what separates them (figures measured in docs/celery.md, the limits below sit between):

- shared_connection: the probe task (its own connection per task) cooperates: 16 at
  once overlap, no queueing, the hub on time. The app's own task shares one connection:
  SERIALIZED, its run times grow to ~C·w while it never waits in the queue;
- psycopg2_plain: BLOCKING: 16 at once wait in the queue ~(C-1)·w while each task, by
  our clock and celery's, runs ~w; the heartbeat is late by ≥ w;
- worker_main: `python worker.py` calling app.worker_main: the task is received and never
  started; nothing was patched; its stacks say where the hub is held; SIGKILL.

Then bad input of a run: an app that does not import, a task the app does not have.
Each run must leave no process and no temp file behind.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.broker import broker as run_broker
from geventprobe.processes.celery_workers import (
    Deadlines,
    UserTask,
    app_command,
    run_celery,
    user_command,
)
from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.worker.celery_probe import PROBE_TASK

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples" / "celery"
C = 16
W = 0.2


@pytest.fixture(scope="module")
def backends():
    """One PostgreSQL and one redis-server for the module's runs."""
    with EmbeddedPostgres(max_connections=2 * C + 20) as pg, run_broker() as broker:
        yield pg.dsn, broker
    children.cleanup()


@pytest.fixture
def private_tmp(monkeypatch):
    """The run's temp dirs go here; it must end empty."""
    path = tempfile.mkdtemp(prefix="gp-test-celery-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", path)
    yield path
    left = os.listdir(path)
    if not left:
        os.rmdir(path)
    assert not left, f"temp files left behind: {left}"


def _run(backends, command, **kwargs):
    dsn, broker = backends
    return run_celery(command, dsn=dsn, broker=broker, wait_s=W, greenlets=C,
                      result_backend=broker.url, **kwargs)


def _assert_gone(run) -> None:
    pids = set(run.boot_pids) | ({run.ready.pid} if run.ready else set())
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"worker processes left running: {alive}"
    assert run.queue_cleanup is None, run.queue_cleanup


def test_probe_ok_and_a_shared_connection_serialized(backends, private_tmp):
    run = _run(backends, app_command("tasks", C, str(EXAMPLES / "shared_connection")),
               tasks=[UserTask("tasks.query", kwargs={"seconds": W})])
    _assert_gone(run)
    assert run.stall is None and not run.boot_errors
    ready = run.ready
    assert ready.pool.endswith("gevent.TaskPool") and ready.concurrency == C
    assert ready.consumes == (run.queue,) and "celery" in ready.user_queues
    assert "worker_process_init" not in [name for name, _ in ready.signals]
    assert ready.facts["select_patched"] and ready.facts["psycopg"]["wait"] == "wait_poll"
    assert "tasks.py" in ready.facts["driver_import"]["by"]
    assert run.connected is not None and run.connected.error is None

    probe = run.batch("at once")
    assert probe.complete and probe.size == C
    assert probe.queue_max_s < 1.0  # measured 0.05-0.12; BLOCKING 3.25-3.49
    assert probe.hub_lag_s < 0.5 * W  # measured ≤ 0.055; BLOCKING ≥ 0.43
    assert probe.run_max_s < 2 * W and probe.peak == C

    own = run.batch("at once", "tasks.query")
    assert own.complete and all(t.state == "SUCCESS" for t in own.tasks)
    assert own.queue_max_s < 1.0  # measured 0.03: taken at once...
    assert own.run_max_s > (C / 2) * W  # ...then queued on the connection: 3.25 s measured
    assert own.hub_lag_s < 0.5 * W  # while the hub runs on time (0.03 s)
    assert own.celery_runtime_max_s > (C / 2) * W  # celery sees it too: the wait is in the task
    assert run.stop.signal == "SIGTERM"


def test_psycopg2_without_psycogreen_blocking(backends, private_tmp):
    run = _run(backends, app_command("tasks", C, str(EXAMPLES / "psycopg2_plain")))
    _assert_gone(run)
    assert run.stall is None
    probe = run.batch("at once")
    assert probe.complete
    assert probe.queue_max_s > (C / 4) * W  # measured 3.25-3.35 s: the pool waited...
    assert probe.run_max_s < 2 * W  # ...while each task ran 0.2 s by our clock
    assert probe.celery_runtime_max_s < 2 * W  # and by celery's
    assert probe.hub_lag_s >= 0.5 * W and probe.peak == 1
    assert run.batch("alone").hub_lag_s >= 0.5 * W  # one task alone holds the hub for w
    facts = (run.facts_after or run.ready).facts
    assert facts["psycopg2"]["wait_callback"] is None
    # gevent's monitor thread saw who held the hub: the probe task's query.
    frames = [fr for g in run.hub.blocked for fr in g["frames"]]
    assert any("in _pg_sleep" in fr for fr in frames), frames[-5:]


def test_worker_main_never_runs_a_task(backends, private_tmp):
    command = user_command(f"{sys.executable} worker.py", str(EXAMPLES / "worker_main"))
    run = _run(backends, command, deadlines=Deadlines(alone=3.0, hub_silent=1.0))
    _assert_gone(run)
    assert run.ready is not None, "worker_ready fires: the worker says it is ready"
    assert run.ready.facts["select_patched"] is False and run.ready.facts["patches"] == []
    assert run.connected is None  # the probe's greenlet never ran
    stall = run.stall
    assert stall.kind == "never-started" and stall.batch == "warm-up"
    assert stall.received == 1 and stall.started == 0
    assert stall.hub_silent_s is None  # the heartbeat never ticked once
    assert "worker.py" in stall.stacks and "poll" in stall.stacks
    assert run.stop.signal == "SIGKILL"  # it ignored SIGTERM


def test_an_app_that_does_not_import_is_one_line(backends, private_tmp):
    with pytest.raises(ProbeError) as info:
        _run(backends, app_command("no_such_module", C, str(EXAMPLES / "psycopg3_cli")))
    message = str(info.value)
    assert "\n" not in message
    assert "before it was ready" in message and "no_such_module was not found" in message


def test_a_command_that_ignores_pythonpath_is_one_line(backends, private_tmp):
    command = user_command(f"{sys.executable} -I -c 'import time; time.sleep(60)'", ".")
    with pytest.raises(ProbeError) as info:
        _run(backends, command, deadlines=Deadlines(boot=2.0))
    message = str(info.value)
    assert "\n" not in message
    assert "could not get into the worker" in message and "PYTHONPATH" in message


def test_an_unknown_task_is_one_line_naming_the_known_ones(backends, private_tmp):
    with pytest.raises(ProbeError) as info:
        _run(backends, app_command("tasks", C, str(EXAMPLES / "psycopg3_cli")),
             tasks=[UserTask("tasks.nope")])
    message = str(info.value)
    assert "\n" not in message
    assert "tasks.nope" in message and "tasks.query" in message and PROBE_TASK in message


def test_sigkill_mid_run_leaves_nothing_within_5_s(tmp_path):
    """kill -9 of the process running run_celery, its worker stuck (worker_main): the
    watchdog stops the worker, redis-server and PostgreSQL and removes every temp dir."""
    private = tempfile.mkdtemp(prefix="gp-test-celery-kill-", dir="/tmp")
    os.chmod(private, 0o755)  # as root, PostgreSQL runs as another user
    code = textwrap.dedent(f"""
        import sys
        from geventprobe.processes.broker import broker
        from geventprobe.processes.celery_workers import Deadlines, run_celery, user_command
        from geventprobe.processes.postgres import EmbeddedPostgres
        with EmbeddedPostgres(max_connections=60) as pg, broker() as b:
            run_celery(user_command(sys.executable + " worker.py",
                                    {str(EXAMPLES / "worker_main")!r}),
                       dsn=pg.dsn, broker=b, deadlines=Deadlines(alone=120))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    parent = subprocess.Popen([sys.executable, "-c", code], env=dict(env, TMPDIR=private))
    try:
        deadline = time.monotonic() + 60
        ready = []
        while not ready and time.monotonic() < deadline and parent.poll() is None:
            ready = glob.glob(os.path.join(private, "geventprobe-celery-*", "ready-*.json"))
            time.sleep(0.05)
        assert ready, "the worker did not get ready"
        time.sleep(0.3)
        ours = {json.loads(Path(ready[0]).read_text())["pid"]}
        for proc in psutil.process_iter():
            try:
                if proc.cwd().startswith(private):
                    ours.add(proc.pid)
            except psutil.Error:
                continue
        assert len(ours) >= 3, "expected the worker, redis-server and PostgreSQL"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alive = [p for p in ours if psutil.pid_exists(p)
                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            left = os.listdir(private)
            if not alive and not left:
                break
            time.sleep(0.05)
        assert not alive, f"processes left running 5 s after kill -9: {alive}"
        assert not left, f"temp files left 5 s after kill -9: {left}"
    finally:
        parent.kill()
        parent.wait()
        for proc in psutil.process_iter():
            try:
                if proc.cwd().startswith(private) or \
                        proc.environ().get("GEVENTPROBE_CELERY_RUN_DIR", "").startswith(private):
                    proc.kill()
            except psutil.Error:
                continue
        import shutil

        shutil.rmtree(private, ignore_errors=True)
