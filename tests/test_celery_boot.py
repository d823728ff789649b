"""The boot dir that gets geventprobe into a celery worker, and the records it writes.

Fast: plain Python processes, no celery worker. What a worker's interpreter has imported
once Python has started is the same with the boot dir as without, but for geventprobe's
own modules and the built-in faulthandler; a sitecustomize the boot dir shadows still
runs; the boot record parses (written by hand, with worker/record.py's version); records
of another version are refused in one line; the batch figures (peak, overlap, queue and
run time) from recorded times; a driver an app hides with ``sys.modules[name] = None``
(Django settings that keep psycopg 3 out) is not taken for an imported one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geventprobe.kinds.celery.workers import (
    Batch,
    TaskFigures,
    main_thread_frames,
    make_boot_dir,
)
from geventprobe.worker import celery_watch, import_watch, probe
from geventprobe.worker import record as rec

SHOW_MODULES = "import sys, json; print(json.dumps(sorted(sys.modules)))"


def _modules(env: dict) -> set[str]:
    out = subprocess.run([sys.executable, "-c", SHOW_MODULES], env=env, capture_output=True,
                         text=True, check=True, timeout=30)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEVENTPROBE", "PYTHONPATH"))}
    env.update(extra)
    return env


@pytest.fixture
def boot(tmp_path):
    return make_boot_dir(str(tmp_path))


def test_at_start_only_our_modules_and_faulthandler_are_added(tmp_path, boot):
    plain = _modules(_env())
    booted = _modules(_env(PYTHONPATH=boot, GEVENTPROBE_CELERY_RUN_DIR=str(tmp_path)))
    added = booted - plain
    assert added == {"geventprobe", "geventprobe.worker", "geventprobe.worker.import_watch",
                     "geventprobe.worker.celery_watch", "faulthandler", "sitecustomize"} - plain
    assert not plain - booted
    for name in ("gevent", "celery", "psycopg", "psycopg2", "signal", "json"):
        assert name not in added


def test_without_the_run_dir_the_boot_does_nothing(tmp_path, boot):
    plain = _modules(_env())
    booted = _modules(_env(PYTHONPATH=boot))
    assert booted - plain <= {"sitecustomize"}
    assert not list(tmp_path.glob("boot-*.json"))


def test_the_boot_record_parses_and_takes_the_stack_signal(tmp_path, boot):
    code = "import os, time; print(os.getpid())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(PYTHONPATH=boot, GEVENTPROBE_CELERY_RUN_DIR=str(tmp_path)),
                         check=True, timeout=30)
    pid = int(out.stdout.strip())
    record = rec.read(rec.CeleryBoot, str(tmp_path / f"boot-{pid}.json"))
    assert record.pid == pid
    assert record.stack_signal > 31  # a real-time signal, not one of celery's
    assert (tmp_path / f"stacks-{pid}.txt").exists()


def test_the_boot_record_has_the_records_version():
    # Written by hand while Python starts (json is not imported yet): same version.
    assert celery_watch.BOOT_VERSION == rec.RECORD_VERSION


def test_a_shadowed_sitecustomize_still_runs(tmp_path, boot):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import builtins\nbuiltins.THEIRS = 42\n")
    code = "import builtins; print(getattr(builtins, 'THEIRS', None))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(PYTHONPATH=os.pathsep.join([boot, str(theirs)]),
                                  GEVENTPROBE_CELERY_RUN_DIR=str(tmp_path)),
                         check=True, timeout=30)
    assert out.stdout.strip() == "42"
    assert list(tmp_path.glob("boot-*.json")), "ours ran too"


def test_a_record_of_another_version_is_refused_in_one_line(tmp_path):
    mark = rec.TaskMark(task_id="x", what="started", at=1.0)
    path = str(tmp_path / "started-x.json")
    rec.write(path, mark)
    assert rec.read(rec.TaskMark, path) == mark
    data = json.loads(Path(path).read_text())
    data["version"] = rec.RECORD_VERSION + 1
    with pytest.raises(rec.RecordError) as info:
        rec.load(rec.TaskMark, data, "started-x.json")
    assert "\n" not in str(info.value) and "version" in str(info.value)
    with pytest.raises(rec.RecordError, match="that TaskDone does not"):
        rec.load(rec.TaskDone, rec.dump(mark), "task-x.json")


def test_the_hub_record_survives_the_round_trip(tmp_path):
    hub = rec.CeleryHub(pid=1, period=0.002, started=0.0, ticks=3, last_tick=1.0,
                        late=[[0.5, 0.2], [0.9, 0.004]], written=1.1,
                        blocked=[rec.BlockedSeen(frames=["a", "b"], user=1, times=[0.6, 0.65],
                                                 seconds=[0.05, 0.1])])
    path = str(tmp_path / "hub-1.json")
    rec.write(path, hub)
    back = rec.read(rec.CeleryHub, path)
    assert back == hub
    assert back.lag_in(0.4, 0.6) == 0.2 and back.lag_in(0.6, 0.8) == 0.0
    assert [(e.t, e.s, e.user) for e in back.events()] == [(0.6, 0.05, 1), (0.65, 0.1, 1)]


def test_the_main_thread_is_the_last_in_a_faulthandler_dump():
    dump = (
        "Thread 0x00007f0000000002 (most recent call first):\n"
        '  File "/x/gevent/_monitor.py", line 10 in run\n'
        "\n"
        "Current thread 0x00007f0000000001 (most recent call first):\n"
        '  File "/venv/lib/python3.11/site-packages/kombu/utils/eventio.py", line 83 in poll\n'
        '  File "/venv/lib/python3.11/site-packages/kombu/asynchronous/hub.py", line 406 in '
        "create_loop\n"
        '  File "/app/worker.py", line 29 in <module>\n')
    assert main_thread_frames(dump) == [
        ("/app/worker.py", 29, "<module>"),
        ("/venv/lib/python3.11/site-packages/kombu/asynchronous/hub.py", 406, "create_loop"),
        ("/venv/lib/python3.11/site-packages/kombu/utils/eventio.py", 83, "poll")]


class _NoImports:
    """A probe source whose app imported nothing (what collect_facts needs of it)."""

    def import_facts(self, worker=None) -> dict:
        return {"build": "x", "driver_import": {}, "driver_imported_in_master": False,
                "import_error": None}


def test_a_hidden_driver_is_not_taken_for_an_imported_one(monkeypatch):
    # Django settings that must not use psycopg 3 hide it: sys.modules["psycopg"] = None.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert not import_watch.loaded("psycopg")
    facts = probe.collect_facts(_NoImports())  # before: ImportError (import of None)
    assert facts["driver"] != "psycopg" and "psycopg" not in facts


def test_the_driver_module_skips_a_hidden_driver(monkeypatch):
    import psycopg2

    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setattr(import_watch, "phase", import_watch.phase)
    module, _, error = import_watch.driver_module()  # before: (None, "app", None)
    assert module is psycopg2 and error is None


def _task(i, sent, started, finished):
    return TaskFigures(task_id=str(i), name="t", sent=sent, received=started, started=started,
                       finished=finished, state="SUCCESS", error=None, celery_runtime=None)


def _batch(tasks):
    return Batch(label="at once", task="t", size=len(tasks), wait_s=0.2, tasks=tuple(tasks),
                 start=0.0, end=max(t.finished for t in tasks), deadline_s=10,
                 hub_lag_s=None)


def test_batch_figures_tell_the_classes_apart():
    # Recorded shapes (docs/celery.md): 4 tasks of w = 0.2 s, sent at 0.
    ok = _batch([_task(i, 0.0, 0.01, 0.21) for i in range(4)])
    blocking = _batch([_task(i, 0.0, 0.2 * i, 0.2 * i + 0.2) for i in range(4)])
    serialized = _batch([_task(i, 0.0, 0.01, 0.01 + 0.2 * (i + 1)) for i in range(4)])
    assert (ok.peak, blocking.peak, serialized.peak) == (4, 1, 4)
    assert ok.overlap == pytest.approx(4.0) and blocking.overlap == pytest.approx(1.0)
    assert ok.queue_max_s == pytest.approx(0.01) and blocking.queue_max_s == pytest.approx(0.6)
    assert blocking.run_max_s == pytest.approx(0.2) and serialized.run_max_s == pytest.approx(0.8)
    assert serialized.queue_max_s == pytest.approx(0.01)
    assert all(b.complete for b in (ok, blocking, serialized))


# A command that leaves the worker in the background (issue 25 row 10: `--detach` left one
# running with its parent 1 and its own session, out of reach of the group stop).
DETACH = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
          "'import time; time.sleep(60)'], start_new_session=True, stdin=subprocess.DEVNULL, "
          "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); time.sleep(0.3)")


def test_a_command_that_detaches_its_worker_is_one_line_and_the_worker_is_stopped(tmp_path):
    import shlex

    import psutil

    from geventprobe.errors import ProbeError
    from geventprobe.kinds.celery.workers import Deadlines, run_celery, user_command
    from geventprobe.processes import broker as brokers

    before = {p.pid for p in psutil.process_iter()}
    command = user_command(f"{shlex.quote(sys.executable)} -c {shlex.quote(DETACH)}",
                           str(tmp_path))
    try:
        with brokers.broker() as b, pytest.raises(ProbeError) as info:
            run_celery(command, dsn="", broker=b, deadlines=Deadlines(boot=10))
    finally:
        left = [p for p in psutil.process_iter() if p.pid not in before
                and "time.sleep(60)" in " ".join(_cmdline(p))]
        for p in left:  # clean up for the next test, then fail this one
            p.kill()
    assert not left, f"the detached process was left running: {[p.pid for p in left]}"
    line = str(info.value)
    assert "ran on in the background" in line and "geventprobe stopped it" in line
    assert "\n" not in line


def _cmdline(p) -> list[str]:
    import psutil

    try:
        return p.cmdline() if p.status() != psutil.STATUS_ZOMBIE else []
    except psutil.Error:
        return []


def test_an_app_with_a_syntax_error_is_named_with_its_file_and_line():
    """Debatable in issue 25, decided: a SyntaxError names its file and line, as gunicorn mode
    does (the tail of celery 5.7.0's own log for such an app)."""
    from geventprobe.kinds.celery.workers import telling_line

    log = ["Traceback (most recent call last):",
           '  File "/v/lib/python3.11/site-packages/celery/app/utils.py", line 528, in find_app',
           '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed',
           '  File "/srv/proj/tasks.py", line 6',
           "    def broken(:",
           "               ^",
           "SyntaxError: invalid syntax"]
    assert telling_line(log) == "SyntaxError: invalid syntax (/srv/proj/tasks.py, line 6)"
    # A library's own frame is no place to look: only the user's code is named.
    assert telling_line([*log[:2], "KeyError: 'x'"]) == "KeyError: 'x'"


@pytest.mark.parametrize(("command", "said"), [
    ("no-such-program-gp25 -A tasks worker", "no-such-program-gp25 was not found on PATH"),
    ("./not-executable.sh", "./not-executable.sh is not executable"),
], ids=["not-on-path", "no-x-bit"])
def test_a_program_that_cannot_run_is_one_line(tmp_path, command, said):
    """It was `internal error: FileNotFoundError: ... 'celery'` (celery not on PATH)."""
    from geventprobe.errors import ProbeError
    from geventprobe.kinds.celery.workers import run_celery, user_command
    from geventprobe.processes import broker as brokers

    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\n")
    with brokers.broker() as b, pytest.raises(ProbeError) as info:
        run_celery(user_command(command, str(tmp_path)), dsn="", broker=b)
    assert str(info.value).startswith(f"--celery-cmd: {said}")
