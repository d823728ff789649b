"""``run --app --route`` on the example apps, with real gunicorn and a real PostgreSQL.

Each test drives one route of one example app (``examples/``) as a user would and
asserts the class, its cause and the exit code; never a timing. One throwaway server
serves the module; the ``quick`` profile (2 workers, 8 concurrent requests per worker)
keeps each run near 30 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from manifests import expect

from geventprobe.processes.postgres import EmbeddedPostgres

integration = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples"
APP = "app:application"


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=120) as pg:
        yield pg.dsn


def drive(run_cli, pg_dsn, tmp_path, example, route, app=APP):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--app", app,
                   "--chdir", str(EXAMPLES / example), "--route", route,
                   env={"GEVENTPROBE_DSN": pg_dsn})
    result = json.loads(out.read_text()) if out.exists() else None
    return proc, result


@integration
def test_clean_route_is_ok(run_cli, pg_dsn, tmp_path, schema):
    proc, result = drive(run_cli, pg_dsn, tmp_path, "clean", "/query")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jsonschema.validate(result, schema)
    (r,) = result["builds"][0]["routes"]
    assert (r["route"], r["verdict"], r["lone_status"]) == ("GET /query", expect("clean"), 200)
    assert r["statuses"] == {"200": 16} and r["cause"] is None
    assert "routes: GET /query OK" in result["summary"]


def _quick_route_is_ok(proc, result, route):
    """Issue 24: a quick route of a healthy app at its defaults is OK, exit 0; what made its
    burst slower than the lone request is the CPU its requests took turns on, and when that
    alone would have read as SERIALIZED a note says so."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = result["builds"][0]["routes"]
    assert (r["route"], r["verdict"], r["statuses"]) == (route, "OK", {"200": 16}), r
    assert r["cause"] is None and r["warm_up"]["workers_warmed"] == 2
    cpu = r["cpu"]
    assert cpu["busy_ms"] > 0 and cpu["cpu_per_request_ms"] > 0, cpu
    p90_ms = r["burst"]["p90_us"] / 1000
    if p90_ms >= 1.8 * r["lone_ms"] and p90_ms - r["lone_ms"] >= 50:  # the rule before
        assert cpu["note"].startswith("16 at once took "), cpu
        assert "ms of CPU per request in the worker" in cpu["note"]


@integration
def test_django_at_its_defaults_is_ok(run_cli, pg_dsn, tmp_path):
    # django-admin startproject, DATABASES from DATABASE_URL, a view running SELECT 1 on
    # Django's connection (CONN_MAX_AGE 0: a new one per request).
    pytest.importorskip("django", reason="the example needs Django: pip install -e '.[test]'")
    proc, result = drive(run_cli, pg_dsn, tmp_path, "django_default", "/health/",
                         app="mysite.wsgi:application")
    _quick_route_is_ok(proc, result, "GET /health/")


@integration
def test_flask_sqlalchemy_at_its_defaults_is_ok(run_cli, pg_dsn, tmp_path):
    # Flask and create_engine(DATABASE_URL): SQLAlchemy's default pool, SELECT 1.
    pytest.importorskip("flask", reason="the example needs Flask: pip install -e '.[test]'")
    proc, result = drive(run_cli, pg_dsn, tmp_path, "flask_sqlalchemy", "/health", app="app:app")
    _quick_route_is_ok(proc, result, "GET /health")


@integration
def test_shared_connection_is_serialized_where_the_requests_waited(run_cli, pg_dsn,
                                                                   tmp_path):
    proc, result = drive(run_cli, pg_dsn, tmp_path, "shared_connection", "/query")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    b = result["builds"][0]
    assert b["verdict"] == "OK"  # the driver cooperates: the route is what makes users wait
    (r,) = b["routes"]
    assert r["verdict"] == expect("shared_connection") == "SERIALIZED", r["evidence"]
    assert r["server_connections"] == 1
    # Where the requests waited (the workers' samples of their parked greenlets).
    assert r["cause_kind"] == "shared-connection", r["cause"]
    assert r["cause"].startswith("one connection shared by ")
    assert "for the connection's lock at app.py:25 in application" in r["cause"]
    assert "SERIALIZED" in proc.stdout.replace("\n", "")


@integration
def test_small_pool_is_serialized(run_cli, pg_dsn, tmp_path):
    proc, result = drive(run_cli, pg_dsn, tmp_path, "small_pool", "/query")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (r,) = result["builds"][0]["routes"]
    assert r["verdict"] == expect("small_pool") == "SERIALIZED", r["evidence"]
    assert r["server_connections"] == 2
    assert r["cause_kind"] == "pool", r["cause"]
    assert r["cause"].startswith("a pool of 2 connections for ")
    assert "at app.py:33 in application" in r["cause"] and "psycopg_pool" in r["cause"]
    assert "psycopg_pool's max_size" in r["advice"]


@integration
def test_cpu_route_is_blocking_and_names_the_users_line(run_cli, pg_dsn, tmp_path):
    proc, result = drive(run_cli, pg_dsn, tmp_path, "cpu_route", "POST /login")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (r,) = result["builds"][0]["routes"]
    assert (r["route"], r["verdict"]) == ("POST /login", expect("cpu_route")), r["evidence"]
    top = r["blocked_by"][0]
    assert top["phase"] == "route POST /login" and top["count"] >= 2
    assert top["user_frame"].startswith("app.py:") and " in login: " in top["user_frame"]
    assert "pbkdf2_hmac" in top["user_frame"] and "pbkdf2_hmac" in r["cause"]


@integration
def test_django_preload_is_failing_with_its_error_line(run_cli, pg_dsn, tmp_path):
    pytest.importorskip("django", reason="the example needs Django: pip install -e '.[test]'")
    proc, result = drive(run_cli, pg_dsn, tmp_path, "django_preload", "/items")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    b = result["builds"][0]
    (r,) = b["routes"]
    assert (r["verdict"], r["lone_status"]) == (expect("django_preload"), 500), r["evidence"]
    assert r["statuses"] == {"500": 16}
    assert r["first_error"].startswith("django.db.utils.DatabaseError: DatabaseWrapper objects "
                                       "created in a thread can only be used in that same thread")
    # The driver, imported in the master by the preload, blocks too; its stack is the wait.
    assert b["verdict"] == "BLOCKING"
    assert any("psycopg/" in s["innermost"] and "wait" in s["innermost"]
               for s in b["blocked_by"]), b["blocked_by"]


@pytest.mark.parametrize(("args", "message"), [
    (["--route", "/login"], "--route drives a route of your app: add --app MODULE:CALLABLE"),
    (["--app", APP, "--route", "login"], "--route 'login' is not a route"),
    (["--app", APP, "--route", "FETCH /login"], "--route 'FETCH /login' is not a route"),
    (["--app", APP, "--route", "/__geventprobe__"], "is geventprobe's own route"),
])
def test_bad_routes_are_refused_in_one_line(run_cli, tmp_path, args, message):
    (tmp_path / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    proc = run_cli("run", *args, "--chdir", str(tmp_path)) if "--app" in args else \
        run_cli("run", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_routes_in_pyproject_are_checked(run_cli, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.geventprobe]\napp = "app:application"\nroutes = ["/ok", "GET"]\n')
    proc = run_cli("run", cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "[tool.geventprobe]: --route 'GET' is not a route" in proc.stderr
    assert "Traceback" not in proc.stderr


@integration
def test_builtin_blocking_build_carries_who_blocked(run_cli, pg_dsn, tmp_path):
    """psycopg2 without a wait callback: the monitor's stack ends in the probe's query."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--builds", "psycopg2", "--json", str(out),
                   env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a baseline: no finding
    (b,) = json.loads(out.read_text())["builds"]
    assert b["verdict"] == "BLOCKING" and b["routes"] == []
    top = b["blocked_by"][0]
    assert top["phase"] == "waits" and top["count"] >= 2 and top["user_frame"] is None
    assert top["innermost"].startswith("geventprobe/worker/probe.py:")
    assert top["innermost"].endswith("in query: cursor.execute(sql, params)")
