"""Whose loop spins: a BUSY-WAIT's cause from what ran on the hub (issue 25 row 12).

Replays what real workers traced (``worker/running.py``), recorded by
``benchmarks/capture_running.py`` in ``tests/data/running/``: each gunicorn worker's idle
window, and each celery probe task's wait on the server, with the worker's CPU over the
same window:

- ``gunicorn-app-spin`` / ``celery-app-spin``: the app's own greenlet loops on
  ``gevent.sleep(0)`` (``tests/apps/busy_app``, ``tests/apps/celery_background_spin``);
- ``gunicorn-idle-spin-control``: geventprobe's idle-spin control (greenlets of ours polling
  idle sockets: the idle cause, not the app);
- ``celery-spinning-wait``: ``examples/celery/spinning_wait``, a wait function of the app's
  own installed in psycopg (the driver's wait loop, whatever file it is in);
- ``gunicorn-healthy`` / ``celery-healthy``: nothing spins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geventprobe.core import causes
from geventprobe.kinds.celery import causes as celery_causes
from geventprobe.record import Verdict
from geventprobe.worker.record import Running, RunningSite

RECORDS = Path(__file__).parent / "data" / "running"


def windows(name: str) -> list[tuple[str, float, Running]]:
    """(kind of window, the worker's CPU over it, what ran) of a recorded run."""
    out = []
    for e in json.loads((RECORDS / f"{name}.json").read_text()):
        r = e["running"]
        out.append((e["kind"], e["cpu"],
                    Running(seconds=r["seconds"], sites=[RunningSite(**s) for s in r["sites"]])))
    return out


def test_an_apps_loop_on_sleep_0_is_named_in_a_gunicorn_worker():
    for _, cpu, running in windows("gunicorn-app-spin"):
        cause, advice = causes.busy_greenlet(running, "its connections sat idle", cpu)
        assert cause.startswith("a greenlet of your app never sleeps: while its connections "
                                "sat idle, the loop at app.py:38 in drain_jobs "
                                "(`gevent.sleep(0)`) ran 5"), cause
        assert "not the driver's wait" in cause and "psycopg" not in cause
        assert advice.startswith("make the loop at app.py:38 in drain_jobs wait for its work")
        assert "PSYCOPG_WAIT_FUNC" not in advice


def test_an_apps_loop_on_sleep_0_is_named_in_a_celery_worker():
    for kind, cpu, running in windows("celery-app-spin"):
        if "warm-up" in kind:
            continue  # a window of a few ms: never the one the CPU rule reads
        cause, _ = causes.busy_greenlet(running, "the probe task only waited on the server",
                                        cpu)
        assert "the loop at tasks.py:31 in drain_jobs (`gevent.sleep(0)`)" in cause, kind


@pytest.mark.parametrize("name", ["gunicorn-healthy", "gunicorn-idle-spin-control",
                                  "celery-spinning-wait", "celery-healthy"])
def test_no_greenlet_is_blamed_where_none_of_the_apps_spun(name):
    for kind, cpu, running in windows(name):
        assert causes.busy_greenlet(running, "x", cpu) is None, (kind, running.sites[:2])


def test_celery_keeps_the_drivers_cause_for_a_wait_function_that_spins():
    """spinning_wait's loop is in the app's tasks.py, but inside psycopg's query: the driver's
    wait loop, named by its function, as before."""
    facts = {"driver": "psycopg", "psycopg": {"wait": "spinning_wait"}}
    (_, cpu, alone), = [w for w in windows("celery-spinning-wait") if w[0].endswith("alone")]
    cause, advice = celery_causes.explain(Verdict.BUSY_WAIT, facts, {"task-cpu-during-waits"},
                                          running=alone, cpu=cpu)
    assert cause.startswith("psycopg's wait function spinning_wait yields to the hub")
    assert "PSYCOPG_WAIT_FUNC" in advice


def test_celery_names_the_apps_loop_not_psycopgs_wait_function():
    facts = {"driver": "psycopg", "psycopg": {"wait": "wait_poll"}}
    (_, cpu, alone), = [w for w in windows("celery-app-spin") if w[0].endswith("alone")]
    cause, advice = celery_causes.explain(Verdict.BUSY_WAIT, facts, {"task-cpu-during-waits"},
                                          running=alone, cpu=cpu)
    assert cause.startswith("a greenlet of your app never sleeps: while the probe task only "
                            "waited on the server, the loop at tasks.py:31 in drain_jobs")
    assert "wait_poll" not in cause and "PSYCOPG_WAIT_FUNC" not in advice
    # Without the trace (an older record), the driver's words as before.
    assert celery_causes.explain(Verdict.BUSY_WAIT, facts, {"task-cpu-during-waits"})[0] \
        .startswith("psycopg's wait function wait_poll")


def test_a_greenlet_that_computes_is_not_called_a_spinning_loop():
    """Few switches: a long computation between two, not a loop on sleep(0)."""
    running = Running(seconds=0.25, sites=[RunningSite(
        frame="jobs.py:12 in rebuild_cache: index = build(rows)", driver=False, user=True,
        seconds=0.2, switches=3)])
    cause, advice = causes.busy_greenlet(running, "its connections sat idle", 0.81)
    assert cause == ("a greenlet of your app kept the CPU busy: while its connections sat "
                     "idle, the code at jobs.py:12 in rebuild_cache (`index = build(rows)`) "
                     "ran 80% of the time (0.810 CPU-s/s); not the driver's wait")
    assert advice.startswith("move the work at jobs.py:12 in rebuild_cache out of the worker")
