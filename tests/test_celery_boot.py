"""The boot dir that gets geventprobe into a celery worker, and the records it writes.

Fast: plain Python processes, no celery worker. What a worker's interpreter has imported
once Python has started is the same with the boot dir as without, but for geventprobe's
own modules and the built-in faulthandler; a sitecustomize the boot dir shadows still
runs; the boot record parses; records of another version are refused in one line; the
batch figures (peak, overlap, queue and run time) from recorded times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geventprobe.processes.celery_workers import Batch, TaskFigures, make_boot_dir
from geventprobe.worker import celery_record as rec

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
    record = rec.load(str(tmp_path / f"boot-{pid}.json"), rec.Boot)
    assert record.pid == pid and record.version == rec.RECORD_VERSION
    assert record.stack_signal > 31  # a real-time signal, not one of celery's
    assert (tmp_path / f"stacks-{pid}.txt").exists()


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
    assert rec.from_json(rec.to_json(mark), rec.TaskMark) == mark
    data = json.loads(rec.to_json(mark))
    data["version"] = rec.RECORD_VERSION + 1
    with pytest.raises(rec.RecordError) as info:
        rec.from_json(json.dumps(data), rec.TaskMark)
    assert "\n" not in str(info.value) and "version" in str(info.value)
    with pytest.raises(rec.RecordError, match="not a TaskDone record"):
        rec.from_json(rec.to_json(mark), rec.TaskDone)


def test_hub_tuples_survive_the_round_trip():
    hub = rec.Hub(pid=1, period=0.002, started=0.0, ticks=3, last_tick=1.0,
                  late=((0.5, 0.2), (0.9, 0.004)), written=1.1,
                  blocked=({"frames": ["a", "b"], "user": 1, "times": [0.6]},))
    back = rec.from_json(rec.to_json(hub), rec.Hub)
    assert back == hub
    assert back.lag_in(0.4, 0.6) == 0.2 and back.lag_in(0.6, 0.8) == 0.0


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
