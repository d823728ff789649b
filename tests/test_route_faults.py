"""Routes that do not do their work, and a worker timeout in a route (issue 19), for real.

The tests' own WSGI app (``tests/apps/statuses``) answers 404, 302, 401, a non-ASCII path,
50 MB, a slow answer and 0.3 s of CPU; real gunicorn gevent workers run it under
``geventprobe run --app --route`` against one throwaway PostgreSQL for the module. The
rows of the issue share runs: one run drives most routes at once. Each test asserts
classes, causes and exit codes, never a timing; ``run_cli``'s TMPDIR must end empty.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from geventprobe.processes.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

STATUSES = Path(__file__).parent / "apps" / "statuses"
APP = "app:application"


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=60) as pg:
        yield pg.dsn


def drive(run_cli, pg_dsn, tmp_path, *args, profile: str = "", env: dict | None = None,
          chdir: Path = STATUSES):
    out = tmp_path / "r.json"
    extra = []
    if profile:
        (tmp_path / "p.toml").write_text(profile)
        extra = ["--config", str(tmp_path / "p.toml")]
    started = time.monotonic()
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--app", APP,
                   "--chdir", str(chdir), *extra, *args,
                   env={"GEVENTPROBE_DSN": pg_dsn, **(env or {})})
    result = json.loads(out.read_text()) if out.exists() else None
    return proc, result, time.monotonic() - started


def test_routes_that_do_not_do_their_work(run_cli, pg_dsn, tmp_path):
    proc, result, _ = drive(
        run_cli, pg_dsn, tmp_path, "--route", "/nothere", "--route", "/redirect",
        "--route", "/auth", "--route", "/uni/café/日本", "--route", "/stream",
        "--route", "/sleep", "--route", "/ok", "--route", "/lazy",
        # Long enough for 16 answers of 4 MB at once, not for /sleep.
        profile="[workload]\nhttp_timeout_s = 4\n", env={"SLEEP_S": "10"})
    # Row 1: a route the app does not have is not OK: it was not measured (exit 2).
    assert proc.returncode == 2, proc.stdout + proc.stderr
    routes = {r["route"]: r for r in result["builds"][0]["routes"]}
    missing = routes["GET /nothere"]
    assert missing["verdict"] == "ERROR" and missing["lone_status"] == 404
    assert missing["cause"] == ("your app has no such route (404 Not Found): nothing of the "
                                "route's work was measured")
    # Rows 2-4: a redirect or a refusal keeps its verdict, with a note saying what was measured.
    redirect, auth = routes["GET /redirect"], routes["GET /auth"]
    assert redirect["verdict"] != "ERROR" and redirect["note"].startswith(
        "your app answered 302 Found to /login: requests carry no cookies")
    assert auth["verdict"] != "ERROR" and auth["note"].startswith(
        "your app answered 401 Unauthorized:")
    assert "GET /redirect OK, but answered 302" in result["summary"] or \
        redirect["verdict"] != "OK"
    # Row 5: a non-ASCII path is percent-encoded, as a browser sends it: the app answers.
    uni = routes["GET /uni/café/日本"]
    assert uni["lone_status"] == 200 and uni["statuses"] == {"200": 16}, uni
    # Row 7: read to the last byte; no database, so no shared-connection cause.
    stream = routes["GET /stream"]
    assert stream["body_bytes"] == 65536 * 64 and stream["statuses"] == {"200": 16}
    # Sending 16 large answers at once costs the worker CPU: on a loaded machine the hub
    # is late by more than the limit (BLOCKING, seen in a full suite), which is what happened.
    assert stream["verdict"] in ("OK", "SERIALIZED", "BLOCKING"), stream
    assert "shared between greenlets" not in (stream["cause"] or "")
    if stream["verdict"] == "SERIALIZED":
        assert "shared between greenlets" not in stream["cause"]
        assert "each answer was 4.2 MB" in stream["cause"] and "not the database" in \
            stream["cause"]
    # Row 8: too slow for http_timeout_s: FAILING, the timeout named, a fix for a slow route.
    slow = routes["GET /sleep"]
    assert slow["verdict"] == "FAILING" and slow["statuses"] == {}  # no burst after that
    assert slow["cause"].startswith("the lone request got no answer within http_timeout_s = "
                                    "4 s")
    assert "raise http_timeout_s" in slow["advice"] and "preload_app" not in slow["advice"]
    assert routes["GET /ok"]["verdict"] == "OK" and routes["GET /ok"]["note"] is None
    # Issue 25: a worker's first request of /lazy holds the hub 0.15 s (a catalogue built
    # lazily). The warm-up takes it before the measurement, in every worker, and says what it
    # stalled with the line: the route itself is quick.
    lazy = routes["GET /lazy"]
    assert lazy["verdict"] == "OK", lazy
    warm = lazy["warm_up"]
    assert warm["workers_warmed"] == warm["workers"] == 2, warm
    assert warm["note"].startswith("each worker's first requests of the route (the warm-up "
                                   "before the measurement"), warm
    assert "app.py:" in warm["note"] and "in build_catalogue" in warm["note"], warm
    assert "post_worker_init" in warm["note"] and "Django" not in warm["note"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_worker_timeout_in_a_route_is_blocking_at_the_apps_line(run_cli, pg_dsn, tmp_path):
    # Rows 14-15: the deployment's timeout, and a route whose CPU outlasts it: gunicorn kills
    # the workers while they serve it. The route is BLOCKING at the app's line; the driver,
    # which cooperates, is not blamed; the evidence quotes the timeout that applied.
    # Measured: gunicorn's gevent worker beats its heartbeat every 1 s and the arbiter looks
    # every 1 s, so with `timeout = 1` and 0.3 s of PBKDF2 (8 requests a worker) gunicorn
    # killed in only 4 runs of 5 (the hub beat between requests), and a request in C for
    # 3.5 s was killed by SIGKILL before its SIGABRT handler could write who blocked (1 of 4).
    # `timeout = 2` and 3.5 s of pure Python: killed every time, the handler at once. /ok goes
    # first: a route after the kills is measured on workers gunicorn started anew, unprobed.
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('worker_class = "gevent"\nworkers = 2\ntimeout = 2\n')
    # One request a worker in the burst: each request of /spin takes a worker down, and
    # gunicorn's new workers take the burst's queued ones (16 requests: 17-27 s; 2: 12 s).
    proc, result, _ = drive(run_cli, pg_dsn, tmp_path, "--gunicorn-config", str(config),
                            "--route", "/ok", "--route", "/spin",
                            profile="[workload]\nroute_concurrency = 1\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (app,) = result["builds"]
    assert result["app"]["timeout"] == 2
    assert app["verdict"] == "OK", app["cause"]  # the driver's windows came before the routes
    assert "report it to psycopg" not in proc.stdout and "wait_poll did not" not in proc.stdout
    routes = {r["route"]: r for r in app["routes"]}
    assert routes["GET /ok"]["verdict"] == "OK", routes["GET /ok"]
    spin = routes["GET /spin"]
    assert spin["verdict"] == "BLOCKING", spin["evidence"]
    (rule,) = [e for e in spin["evidence"] if e["rule"] == "route-worker-timeout"]
    assert rule["text"].endswith("its hub did not run for longer than your timeout 2 s")
    assert spin["cause"].startswith("the hub was blocked longer than gunicorn's timeout (2 s)")
    assert "app.py:" in spin["cause"] and "in hold_hub" in spin["cause"], spin["cause"]
    assert spin["first_error"] is None  # gunicorn's "Perhaps out of memory?" is not the app's
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_app_still_importing_names_the_setting(run_cli, pg_dsn, tmp_path):
    # Row 11: an import that outlasts the boot timeout is named as such, with the setting.
    (tmp_path / "app.py").write_text(
        "import time\ntime.sleep(30)\n\n\ndef application(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'ok']\n")
    proc, _, seconds = drive(run_cli, pg_dsn, tmp_path, chdir=tmp_path,
                             profile="[workload]\nboot_timeout_s = 2\n")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("geventprobe: error: your app was still importing in gunicorn "
                           "worker "), line
    assert "raise boot_timeout_s (now 2 s) in a profile" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert seconds < 25  # not the import's 30 s: the boot timeout decided
