"""What the app owns stays the app's, and what the app does is blamed on the app (issue 25
rows 11 and 12), end to end: real gunicorn and celery gevent workers, a real PostgreSQL and
redis-server.

One gunicorn run of ``tests/apps/busy_app`` with ``--route /guarded`` asserts both rows:

- row 11: ``/guarded`` arms the app's own SIGALRM timer per request (the timeout-decorator
  pattern, 2 s) around a 0.2 s regex that holds the GIL. The stall watch must not change
  that: every request answers 200, as with plain gunicorn (16 of 16, measured by hand), the
  route is BLOCKING, and who blocked names the regex line (the watch's own timer and signal
  saw it under the held GIL). Before: FAILING, the lone request and 5 of 16 answered 500
  from the app's own timeout, fired by the watch's 50 ms re-arm;
- row 12: a background greenlet of the app loops on ``gevent.sleep(0)``: BUSY-WAIT, with
  the app's line as the cause (not psycopg's wait function, which cooperates).

One celery run of ``tests/apps/celery_background_spin`` asserts row 12 for a celery worker.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from geventprobe.processes.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

APPS = Path(__file__).parent / "apps"
BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=60) as pg:
        yield pg.dsn


def test_the_apps_timer_stays_its_own_and_its_loop_is_blamed(run_cli, pg_dsn, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--app", "app:application",
                   "--chdir", str(APPS / "busy_app"), "--route", "/guarded",
                   env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (app,) = json.loads(out.read_text())["builds"]
    (route,) = app["routes"]
    # Row 11: the app's own request timeout never fired; the line is still named.
    assert route["lone_status"] == 200 and route["statuses"] == {"200": 16}, route
    assert route["verdict"] == "BLOCKING", route["evidence"]
    assert route["blocked_by"][0]["user_frame"].startswith("app.py:70 in validate"), route
    assert route["cause_kind"] == "gil-held", route["cause"]
    # Row 12: BUSY-WAIT stays; the cause is the app's loop, not psycopg's wait function.
    assert app["verdict"] == "BUSY-WAIT", app["evidence"]
    assert "cpu-while-idle" in {e["rule"] for e in app["evidence"] if e["fired"]}
    assert app["cause"].startswith("a greenlet of your app never sleeps: while its connections "
                                   "sat idle, the loop at app.py:38 in drain_jobs "
                                   "(`gevent.sleep(0)`)"), app["cause"]
    assert "wait function" not in app["cause"] and "PSYCOPG_WAIT_FUNC" not in app["advice"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_celery_apps_loop_is_blamed_not_the_driver(run_cli, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--celery", "tasks", "--chdir", str(APPS / "celery_background_spin"),
                   "--json", str(out),
                   env={"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (worker,) = json.loads(out.read_text())["builds"]
    assert worker["verdict"] == "BUSY-WAIT", worker["evidence"]
    assert worker["cause"].startswith("a greenlet of your app never sleeps: while the probe "
                                      "task only waited on the server, the loop at tasks.py:31 "
                                      "in drain_jobs"), worker["cause"]
    assert "wait function" not in worker["cause"]
    assert "PSYCOPG_WAIT_FUNC" not in worker["advice"]
