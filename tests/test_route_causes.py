"""Every route verdict and its cause, replayed from what a real route phase recorded.

Each record (``tests/data/causes/records/<example>.json``, captured by
``benchmarks/capture_route_records.py`` from ``geventprobe run --app app:application
--chdir examples/<example> --route … --profile quick``) holds what
``app/route_rules.judge_all`` received in that run: the parent's figures of the route
(log lines, burst window, server connections), every worker's ``routes-<pid>.json`` and
the ``Deployment`` (preload, the app's directory, the driver's own cause). Replaying it
gives the verdict, cause and fix that run printed; the assertions are the issue's: the
verdict, the user's line (``app.py:N``), a fix that fits, and "preload" only where the
app preloads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import route_records

from geventprobe.app import route_rules
from geventprobe.core import route_causes
from geventprobe.core.known_errors import Deployment
from geventprobe.record import RouteResult, Verdict
from geventprobe.settings import Thresholds
from geventprobe.worker.record import RoutePhase

RECORDS = Path(__file__).parent / "data" / "causes" / "records"
PRELOADED = {"preload_sleep", "master_connection", "django_preload"}


def replay(name: str) -> RouteResult:
    """The route verdict of the recorded run of ``examples/<name>``."""
    phase, deployment = route_records.load(RECORDS / f"{name}.json")
    (result,) = route_rules.judge_all(phase, Thresholds(), deployment)
    return result


def words(r: RouteResult) -> str:
    return f"{r.cause} {r.advice}".lower()


@pytest.mark.parametrize("name", sorted(p.stem for p in RECORDS.glob("*.json")))
def test_preload_is_named_only_where_the_app_preloads(name):
    r = replay(name)
    assert ("preload" in words(r)) == (name in PRELOADED and r.verdict is not Verdict.OK), \
        (r.cause, r.advice)


# ---------------------------------------------------------------- the five cases of the issue


def test_pool_timeout_is_the_exception_and_the_pool_not_the_traceback_header():
    r = replay("pool_timeout")
    assert r.verdict is Verdict.FAILING and r.cause_kind == "pool-timeout"
    assert r.first_error == "psycopg_pool.PoolTimeout: couldn't get a connection after 0.50 sec"
    assert "Traceback" not in r.cause and "[ERROR]" not in r.cause
    assert "the pool ran out of connections at app.py:29 in application" in r.cause
    assert "on 2 server connections" in r.cause
    assert r.error_at == "app.py:29 in application: with pool.connection() as conn:"
    assert "psycopg_pool's max_size" in r.advice


def test_psycopg2_shared_connection_gets_a_connection_per_greenlet():
    r = replay("psycopg2_shared")
    assert r.verdict is Verdict.FAILING and r.cause_kind == "shared-connection"
    assert r.first_error.startswith("psycopg2.ProgrammingError: execute cannot be used while "
                                    "an asynchronous query is underway")
    assert "one psycopg2 connection used by several greenlets at once at app.py:35" in r.cause
    assert r.error_at.startswith("app.py:35 in application: cur.execute(")
    assert "its own connection" in r.advice


def test_sqlalchemy_pool_of_one_is_a_pool_not_a_shared_connection():
    r = replay("sqlalchemy_small_pool")
    assert r.verdict is Verdict.SERIALIZED and r.cause_kind == "pool"
    assert r.cause.startswith("a pool of 1 connection for ")
    assert "at app.py:34 in application (`with engine.connect() as conn:`)" in r.cause
    assert "sqlalchemy/util/queue.py" in r.cause
    top = r.waited_at[0]
    assert (top.kind, top.working) == ("pool", 1) and top.most >= 5
    assert "create_engine's pool_size + max_overflow" in r.advice


def test_regex_under_a_held_gil_names_the_line_and_no_thread():
    r = replay("regex_route")
    assert r.verdict is Verdict.BLOCKING and r.cause_kind == "gil-held"
    top = r.blocked_by[0]
    assert top.gil_held and top.user_frame.startswith("app.py:24 in validate")
    assert "app.py:24 in validate" in r.cause
    assert "a thread does not help" in r.advice and "regular expression" in r.advice


def test_preload_sleep_is_the_binding_made_in_the_master():
    r = replay("preload_sleep")
    assert r.verdict is Verdict.BLOCKING and r.cause_kind == "early-binding"
    assert "`from time import sleep` at app.py:17 bound the standard library's time.sleep" \
        in r.cause
    assert "the call at app.py:22 in call_upstream blocks the whole worker" in r.cause
    assert "preload_app" in r.cause
    assert "`import time`, then call `time.sleep(...)`" in r.advice
    assert "drop preload_app" in r.advice


# ---------------------------------------------------------------- the other example apps


def test_psycopg_pool_of_two():
    r = replay("small_pool")
    assert r.verdict is Verdict.SERIALIZED and r.cause_kind == "pool"
    assert r.cause.startswith("a pool of 2 connections for ")
    assert "at app.py:33 in application" in r.cause and "psycopg_pool's max_size" in r.advice


def test_one_shared_psycopg_connection():
    r = replay("shared_connection")
    assert r.verdict is Verdict.SERIALIZED and r.cause_kind == "shared-connection"
    assert "at app.py:25 in application" in r.cause and "psycopg/" in r.cause
    assert "its own connection" in r.advice


def test_a_lock_of_the_apps_with_no_database():
    r = replay("app_lock")
    assert r.verdict is Verdict.SERIALIZED and r.cause_kind == "lock"
    assert "at app.py:24 in call_upstream (`with CLIENT_LOCK:`)" in r.cause
    assert "connection" not in r.cause


def test_cpu_in_the_request_that_releases_the_gil():
    r = replay("cpu_route")
    assert r.verdict is Verdict.BLOCKING and r.cause_kind == "blocking-call"
    assert "app.py:19 in login" in r.cause and not r.blocked_by[0].gil_held
    assert "threadpool" in r.advice


def test_django_thread_check_after_preload():
    r = replay("django_preload")
    assert r.verdict is Verdict.FAILING and r.cause_kind == "django-thread-sharing"
    assert r.error_at is None  # raised in Django's request signal: no frame of the app's
    assert "drop preload_app" in r.advice


def test_a_connection_made_in_the_master():
    r = replay("master_connection")
    if r.verdict is Verdict.FAILING:
        assert r.cause_kind == "master-connection" and "app.py:29" in r.cause
    else:  # psycopg imported in the master waits in C: the driver's own cause
        assert r.verdict is Verdict.BLOCKING and r.cause_kind == "driver"
        assert "wait_c" in r.cause and "preload" in r.advice.lower()


def test_the_clean_pool_is_ok():
    r = replay("clean")
    assert r.verdict is Verdict.OK and r.cause is None


def test_a_stall_watch_that_stepped_aside_says_so():
    """Issue 25 row 11: when the app took the stall watch's signal, a stall nobody caught is
    not "neither caught where": the watch was off, and the cause says why."""
    off = "the app took SIGRTMAX while the stall watch ran: it stepped aside and left the signal"
    workers = {1: RoutePhase(pid=1, heartbeat_expected=[], heartbeat_lag=[], requests=[],
                             blocked=[], stall_watch_off=off),
               2: RoutePhase(pid=2, heartbeat_expected=[], heartbeat_lag=[], requests=[],
                             blocked=[])}
    found = route_causes.for_blocking([], workers, Deployment(), 1500.0)
    assert found.cause == ("the hub stalled 1500 ms during the burst; gevent's monitor thread "
                           f"did not catch where, and the stall watch was off ({off})")
    quiet = route_causes.for_blocking([], {2: workers[2]}, Deployment(), 1500.0)
    assert quiet.cause.endswith("neither gevent's monitor thread nor the stall watch caught where")
