"""The route causes end to end, against real PostgreSQL and real gunicorn gevent workers
(three runs, ~40 s).

The five cases of the issue, each reproduced by an example app: the verdict, a cause that
names the user's line (``app.py:N``), a fix that fits, and "preload" only when the app
preloads.

``geventprobe run --app app:application --chdir examples/route_causes --route …``, one run,
five routes (nothing preloads there, so no word of preload):

- ``/pool-timeout``: FAILING, ``psycopg_pool.PoolTimeout`` (not the traceback's header),
  raised at ``with pool.connection()``, fix the pool's max_size;
- ``/small-pool``: SERIALIZED, a SQLAlchemy pool of 1 (not "a connection shared"), waited
  on at ``with engine.connect()``;
- ``/lock``: SERIALIZED, a lock of the app's at ``with CLIENT_LOCK:``;
- ``/validate``: BLOCKING, who blocked names ``PATTERN.match`` although the call keeps the
  GIL (gevent's monitor thread alone saw nothing), and no thread in the fix;
- ``/upstream``: BLOCKING, ``from time import sleep`` bound before gevent patched (the
  gunicorn config imported ``upstream.py``), with the line that bound it.

Then one run each of the two cases that need an app of their own:

- ``examples/psycopg2_shared`` ``/query`` (psycogreen, one module-level connection, no
  preload): FAILING, the ``ProgrammingError`` at ``app.py:35``, a connection per greenlet,
  no word of preload;
- ``examples/preload_sleep`` ``/upstream`` (``preload_app = True``): BLOCKING, the binding
  at ``app.py:17`` made when the master imported the app; here the fix names preload.

The other example apps' runs are replayed from their records in
``tests/test_route_causes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from manifests import expect

from geventprobe.processes.postgres import EmbeddedPostgres

integration = pytest.mark.integration
EXAMPLES = Path(__file__).parent.parent / "examples"
EXAMPLE = EXAMPLES / "route_causes"


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=60) as pg:
        yield pg.dsn


def _no_preload(r: dict) -> None:
    assert "preload" not in f"{r['cause']} {r['advice']}".lower(), r


def pool_timeout(r: dict) -> None:
    assert r["verdict"] == expect("route_causes", "pool-timeout")
    assert r["cause_kind"] == "pool-timeout", r["cause"]
    assert r["first_error"] == ("psycopg_pool.PoolTimeout: couldn't get a connection after "
                                "0.50 sec")
    assert "at app.py:48 in pool_timeout" in r["cause"]
    assert r["error_at"] == "app.py:48 in pool_timeout: with pool.connection() as conn:"
    assert "max_size" in r["advice"]
    _no_preload(r)


def small_pool(r: dict) -> None:
    assert r["verdict"] == expect("route_causes", "small-pool")
    assert r["cause_kind"] == "pool", r["cause"]
    assert r["cause"].startswith("a pool of 1 connection for ")
    assert "at app.py:54 in small_pool (`with engine.connect() as conn:`)" in r["cause"]
    assert "pool_size + max_overflow" in r["advice"]
    _no_preload(r)


def app_lock(r: dict) -> None:
    assert r["verdict"] == expect("route_causes", "lock") and r["cause_kind"] == "lock", r["cause"]
    assert "at app.py:60 in shared_client (`with CLIENT_LOCK:`)" in r["cause"]
    _no_preload(r)


def gil_held(r: dict) -> None:
    assert r["verdict"] == expect("route_causes", "validate")
    assert r["cause_kind"] == "gil-held", r["cause"]
    top = r["blocked_by"][0]
    assert top["user_frame"].startswith("app.py:66 in validate") and top["gil_held"]
    assert "a thread does not help" in r["advice"] and "threadpool" not in r["advice"]
    _no_preload(r)


def early_binding(r: dict) -> None:
    assert r["verdict"] == expect("route_causes", "upstream")
    assert r["cause_kind"] == "early-binding", r["cause"]
    assert "`from time import sleep` at upstream.py:10" in r["cause"]
    assert "upstream.py:22 in call_upstream" in r["cause"]
    assert "`import time`" in r["advice"] and "gunicorn config" in r["advice"]
    _no_preload(r)


CHECKS = {"/pool-timeout": pool_timeout, "/small-pool": small_pool, "/lock": app_lock,
          "/validate": gil_held, "/upstream": early_binding}


def psycopg2_shared(r: dict) -> None:
    assert r["verdict"] == expect("psycopg2_shared")
    assert r["cause_kind"] == "shared-connection", r["cause"]
    assert r["first_error"].startswith("psycopg2.ProgrammingError: execute cannot be used "
                                       "while an asynchronous query is underway")
    assert "one psycopg2 connection used by several greenlets at once at app.py:35" \
        in r["cause"]
    assert r["error_at"].startswith("app.py:35 in application: cur.execute(")
    assert "its own connection" in r["advice"]
    _no_preload(r)


def preload_sleep(r: dict) -> None:
    assert r["verdict"] == expect("preload_sleep")
    assert r["cause_kind"] == "early-binding", r["cause"]
    assert "`from time import sleep` at app.py:17" in r["cause"]
    assert "app.py:22 in call_upstream" in r["cause"] and "preload_app" in r["cause"]
    assert "`import time`" in r["advice"] and "drop preload_app" in r["advice"]


def _run(run_cli, dsn: str, tmp_path, example: Path, routes) -> dict:
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--app",
                   "app:application", "--chdir", str(example),
                   *[a for r in routes for a in ("--route", r)],
                   env={"GEVENTPROBE_DSN": dsn})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (app,) = json.loads(out.read_text())["builds"]
    return app


@integration
@pytest.mark.parametrize("example, route, check", [
    ("psycopg2_shared", "/query", psycopg2_shared),
    ("preload_sleep", "/upstream", preload_sleep),
])
def test_an_app_of_its_own(run_cli, pg_dsn, tmp_path, example, route, check):
    app = _run(run_cli, pg_dsn, tmp_path, EXAMPLES / example, [route])
    (r,) = app["routes"]
    check(r)


@integration
def test_five_routes_five_causes(run_cli, pg_dsn, tmp_path):
    app = _run(run_cli, pg_dsn, tmp_path, EXAMPLE, CHECKS)
    assert app["verdict"] == "OK", app["cause"]  # the driver cooperates: never blamed
    routes = {r["route"].split()[1]: r for r in app["routes"]}
    wrong = []
    for path, check in CHECKS.items():  # every route checked, every miss reported
        try:
            check(routes[path])
        except AssertionError as exc:
            wrong.append(f"{path}: {exc}")
    assert not wrong, "\n".join(wrong)
