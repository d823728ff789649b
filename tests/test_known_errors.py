"""The exception a route raised, read from the workers' real logs, and its cause and fix.

The logs in ``tests/data/causes/`` were written by plain gunicorn running the example
apps (by a by-hand script since replaced by the harness: ``harness/harness.py EXAMPLE
--keep-log LOG`` keeps the server's log; docs/causes.md); ``direct_errors.txt`` holds two
tracebacks printed by SQLAlchemy and psycopg themselves (same server).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from geventprobe.app import gunicorn_app
from geventprobe.core import known_errors, tracebacks
from geventprobe.core.known_errors import Deployment
from geventprobe.kinds.celery import task_rules

DATA = Path(__file__).parent / "data" / "causes"
ROOT = "/work/wt/causes/examples/"  # where the example apps ran when the logs were taken


def _lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def _main(name: str) -> tracebacks.LoggedError:
    error = tracebacks.main_error(_lines(name))
    assert error is not None
    return error


def test_pool_timeout_is_the_last_line_not_the_header():
    error = _main("pool_timeout.log")
    assert error.line == "psycopg_pool.PoolTimeout: couldn't get a connection after 0.50 sec"
    assert error.name == "PoolTimeout"
    assert error.user_frame is not None
    assert error.user_frame.where(ROOT + "pool_timeout") == "app.py:29 in application"
    assert error.user_frame.source == "with pool.connection() as conn:"
    assert error.raised_at.where() == "psycopg_pool/pool.py:218 in getconn"
    assert error.count == 5 and error.pids == (24560,)


def test_identical_errors_of_two_workers_count_together():
    error = _main("psycopg2_shared.log")
    assert error.type == "psycopg2.ProgrammingError"
    assert error.message == "execute cannot be used while an asynchronous query is underway"
    assert error.user_frame.text(ROOT + "psycopg2_shared") == (
        'app.py:35 in application: cur.execute("SELECT pg_sleep(0.2)")')
    assert error.pids == (19259, 19260)
    assert error.count == len(tracebacks.tracebacks(_lines("psycopg2_shared.log")))


def test_an_error_raised_in_library_code_only_has_no_user_frame():
    error = _main("django_preload.log")
    assert error.type == "django.db.utils.DatabaseError"
    assert error.message.startswith("DatabaseWrapper objects created in a thread")
    assert error.user_frame is None  # Django's own request signal raised it
    # Thread ids differ from one request to the next: still one error.
    assert len(tracebacks.summarize(_lines("django_preload.log"))) == 1


def test_two_distinct_errors_stay_apart_in_log_order():
    errors = tracebacks.summarize(_lines("master_connection.log"))
    assert [e.line for e in errors] == [
        "psycopg.InternalError: got no result from the query",
        'psycopg.errors.DuplicatePreparedStatement: prepared statement "_pg3_0" already exists',
    ]


def test_no_traceback_no_error():
    assert tracebacks.main_error(_lines("sqlalchemy_small_pool.log")) is None
    assert tracebacks.main_error([]) is None


def test_a_chained_traceback_is_one_error_the_last_one():
    lines = [
        "[2026-12-01 15:51:49 +0000] [7] [ERROR] Error handling request GET /x",
        "Traceback (most recent call last):",
        '  File "/srv/app/app.py", line 10, in application',
        "    pool.get()",
        "queue.Empty",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/srv/app/app.py", line 12, in application',
        "    raise RuntimeError('no connection') from None",
        "RuntimeError: no connection",
    ]
    errors = tracebacks.tracebacks(lines)
    assert len(errors) == 1
    assert errors[0].line == "RuntimeError: no connection"
    assert errors[0].user_frame.where("/srv/app") == "app.py:12 in application"


def test_messages_printed_by_the_libraries_themselves():
    errors = tracebacks.tracebacks(_lines("direct_errors.txt"))
    assert [e.name for e in errors] == ["TimeoutError", "OperationalError"]
    assert errors[0].message.startswith("QueuePool limit of size 1 overflow 0 reached")
    assert errors[1].message == "sending query failed: another command is already in progress"


@pytest.mark.parametrize("name, key", [
    ("pool_timeout.log", "pool-timeout"),
    ("psycopg2_shared.log", "shared-connection"),
    ("django_preload.log", "django-thread-sharing"),
])
def test_known_errors(name, key):
    error = _main(name)
    assert known_errors.explain(error, Deployment()).key == key


def test_direct_errors_are_known():
    sa, pg = tracebacks.tracebacks(_lines("direct_errors.txt"))
    assert known_errors.explain(sa, Deployment()).key == "pool-timeout"
    assert known_errors.explain(pg, Deployment()).key == "shared-connection"
    assert "pool_size + max_overflow" in known_errors.explain(sa, Deployment()).fix


def test_pool_timeout_cause_names_the_users_line_and_the_load():
    d = Deployment(concurrency=10, connections=2, root=ROOT + "pool_timeout",
                   **gunicorn_app.DEPLOYMENT_WORDS)
    out = known_errors.explain(_main("pool_timeout.log"), d)
    assert out.cause.startswith("psycopg_pool.PoolTimeout: couldn't get a connection")
    assert "at app.py:29 in application" in out.cause
    assert "10 concurrent requests on 2 server connections" in out.cause
    assert "max_size" in out.fix and "worker_connections" in out.fix


@pytest.mark.parametrize("name", ["pool_timeout.log", "psycopg2_shared.log",
                                  "master_connection.log", "django_preload.log"])
def test_no_fix_names_preload_unless_preload_is_on(name):
    for error in tracebacks.summarize(_lines(name)):
        out = known_errors.explain(error, Deployment(preload=False))
        assert "preload" not in (out.cause + out.fix).lower(), out


def test_preload_is_named_when_it_is_on():
    out = known_errors.explain(_main("django_preload.log"), Deployment(preload=True))
    assert "preload_app" in out.cause and "close_all()" in out.fix
    shared = known_errors.explain(_main("psycopg2_shared.log"), Deployment(preload=True))
    assert "post_fork" in shared.fix


def test_the_shared_connection_fix_is_a_connection_per_greenlet():
    out = known_errors.explain(_main("psycopg2_shared.log"), Deployment())
    assert "its own connection" in out.fix


def test_a_connection_made_in_the_master_only_when_preloaded():
    error = _main("master_connection.log")
    assert known_errors.explain(error, Deployment(preload=True)).key == "master-connection"
    assert known_errors.explain(error, Deployment(preload=False)).key == "protocol-confused"


def test_celery_words():
    out = known_errors.explain(_main("pool_timeout.log"),
                               Deployment(**task_rules.DEPLOYMENT_WORDS))
    assert "celery's -c" in out.fix and "worker_connections" not in out.fix
    assert "tasks waited" in out.cause


def test_an_unknown_error_keeps_its_line_and_frame():
    lines = ["Traceback (most recent call last):",
             '  File "/srv/app/app.py", line 3, in application',
             "    1 / 0",
             "ZeroDivisionError: division by zero"]
    out = known_errors.explain(tracebacks.main_error(lines), Deployment(root="/srv/app"))
    assert out.key is None
    assert out.cause == ("ZeroDivisionError: division by zero, raised at app.py:3 in "
                         "application: 1 / 0")
    assert "preload" not in out.fix
    assert "preload_app" in known_errors.explain(tracebacks.main_error(lines),
                                                 Deployment(preload=True)).fix
