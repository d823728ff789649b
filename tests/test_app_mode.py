"""``geventprobe run --app`` on the example apps, with real gunicorn and a real PostgreSQL.

Each test runs the CLI as a user would, in the example's directory and with its
own gunicorn config, and asserts the classification, the cause, and what the
facts say the workers really use; never a timing. One throwaway server serves
the whole module (through ``GEVENTPROBE_DSN``, as a user's CI would), and the
``quick`` profile keeps each run short.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
from conftest import by_build
from manifests import expect

from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.record import Verdict

integration = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples"
APP = "app:application"


@pytest.fixture(scope="module")
def pg_dsn():
    """One embedded server for the module: each run needs 2 × (8 + 4) connections."""
    with EmbeddedPostgres(max_connections=80) as pg:
        yield pg.dsn


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)


def run_app(run_cli, pg_dsn, out, *args, env=None, cwd=None):
    full_env = {"GEVENTPROBE_DSN": pg_dsn, **(env or {})}
    return run_cli("run", "--profile", "quick", "--json", str(out), *args, env=full_env, cwd=cwd)


# example, how its gunicorn config reaches gunicorn, the verdict (its manifest's: the class
# the harness shows with plain gunicorn), words the cause must hold
CASES = [
    ("pool_app", "found", expect("pool_app"), None),
    ("config_import", "flag", expect("config_import"),
     "while gunicorn read the config file, by gunicorn.conf.py:12"),
    ("preload", "found", expect("preload"),
     "while it loaded the app (--preload / preload_app = True), by app.py:9"),
    ("psycogreen_post_fork", "env", expect("psycogreen_post_fork"), None),
    ("psycogreen_post_worker_init", "found", expect("psycogreen_post_worker_init"), None),
    ("psycopg2_plain", "found", expect("psycopg2_plain"), "psycopg2 has no wait callback"),
]


@integration
@pytest.mark.parametrize(("example", "how", "expected", "cause"), CASES,
                         ids=[c[0] for c in CASES])
def test_examples(run_cli, pg_dsn, tmp_path, schema, example, how, expected, cause):
    folder = EXAMPLES / example
    out = tmp_path / "r.json"
    args = ["--app", APP, "--chdir", str(folder)]
    env = {}
    if how == "flag":
        args += ["--gunicorn-config", str(folder / "gunicorn.conf.py")]
    elif how == "env":  # the way many deployments pass it
        env["GUNICORN_CMD_ARGS"] = "--config gunicorn.conf.py"
    proc = run_app(run_cli, pg_dsn, out, *args, env=env)
    assert proc.returncode == (0 if expected == "OK" else 1), proc.stdout + proc.stderr
    result = load(out)
    jsonschema.validate(result, schema)
    b = by_build(result)[APP]
    assert b["verdict"] == expected, (b["evidence"], b["facts"].get("driver_import"))
    if cause:
        assert cause in b["cause"]
        assert cause in " ".join(proc.stdout.split())  # wrapped to the width
    else:
        assert b["cause"] is None
    facts = b["facts"]
    assert facts["mode"] == "app" and facts["select_patched"] and facts["socket_patched"]
    # Their config ran, their settings held: two gevent workers, nothing forced.
    app = result["app"]
    assert app["worker_class"] == "gevent" and not app["worker_class_forced"]
    assert app["workers"] == 2 and len(b["workers"]) == 2
    assert app["gunicorn_config"].endswith(f"{example}/gunicorn.conf.py")
    # Users' requests were served by the same workers, in their app's hub.
    requests = b["metrics"]["requests"]
    assert requests["completed"] > 0 and requests["path"] == "/__geventprobe__"
    assert "req p99 ms" in proc.stdout


@integration
def test_facts_say_what_the_workers_really_use(run_cli, pg_dsn, tmp_path):
    """psycogreen applied in post_fork: the callback, and who imported psycopg2 when."""
    out = tmp_path / "r.json"
    proc = run_app(run_cli, pg_dsn, out, "--app", APP, "--chdir",
                   str(EXAMPLES / "psycogreen_post_fork"))
    assert proc.returncode == 0, proc.stderr
    facts = by_build(load(out))[APP]["facts"]
    assert facts["driver"] == "psycopg2"
    assert facts["psycopg2"]["wait_callback"] == "psycogreen.gevent.gevent_wait_callback"
    # psycogreen imported psycopg2 in post_fork, before gevent patched the worker...
    assert facts["driver_import"]["phase"] == "post_fork"
    assert facts["driver_import"]["select_patched"] is False
    assert facts["driver_import"]["by"].endswith("(from gunicorn.conf.py:15)")
    # ...and its callback was in place from post_fork on.
    seen = {s["phase"]: s["psycopg2_wait_callback"] for s in facts["snapshots"]}
    assert seen["post_fork"] == seen["post_worker_init"] == facts["psycopg2"]["wait_callback"]
    assert "psycogreen" in proc.stdout


@integration
def test_lazy_app_from_pyproject_without_gunicorn_config(run_cli, pg_dsn, tmp_path):
    """No gunicorn config (so gunicorn's sync default: gevent is forced, and said so), the
    driver imported only when a request comes, and every setting from pyproject.toml."""
    (tmp_path / "lazyapp.py").write_text(
        "def application(environ, start_response):\n"
        "    import psycopg  # on the first request only\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.geventprobe]\napp = "lazyapp:application"\nprofile = "quick"\n'
        "[tool.geventprobe.workload]\ngreenlets = 4\n")
    out = tmp_path / "r.json"
    proc = run_cli("run", "--json", str(out), cwd=str(tmp_path),
                   env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = load(out)
    b = by_build(result)["lazyapp:application"]
    assert b["verdict"] == "OK"
    assert result["app"]["worker_class_forced"] and result["app"]["their_worker_class"] == "sync"
    assert "forced" in proc.stdout
    assert b["metrics"]["greenlets"] == 4  # from [tool.geventprobe.workload]
    assert "[tool.geventprobe]" in result["profile"]["source"]
    # The app had imported no driver when the worker booted: the probe imported one there.
    assert b["facts"]["driver_import"]["phase"] == "probe"
    assert b["facts"]["driver_import"]["select_patched"] is True


@integration
@pytest.mark.parametrize("preload", [False, True], ids=["in-worker", "preload"])
def test_app_that_fails_to_import_exits_2_with_its_own_error(run_cli, pg_dsn, tmp_path,
                                                              preload):
    (tmp_path / "broken.py").write_text("import not_a_real_dependency_xyz\n"
                                        "application = None\n")
    args = ["--app", "broken:application", "--chdir", str(tmp_path)]
    proc = run_app(run_cli, pg_dsn, tmp_path / "r.json", *args,
                   *(["--preload"] if preload else []))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "No module named 'not_a_real_dependency_xyz'" in proc.stderr
    assert "broken.py, line 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("geventprobe: error: your app failed to load"), last


@integration
@pytest.mark.parametrize(("config", "message"), [
    ("workers = 2\nbind = undefined_name\n",
     "NameError: name 'undefined_name' is not defined (gunicorn.conf.py, line 2)"),
    ("workers = 'many'\n", "Invalid value for workers: many"),
    ("def post_fork(server):\n    pass\n", "post_fork: Value must have an arity of: 2"),
    # issue 19 row 12: gunicorn's own message, not the last line of its multi-line error.
    ('worker_class = "eventlet"\n', "RuntimeError: class uri 'eventlet' invalid or not found "
     "(ImportError: Entry point ('gunicorn.workers', 'eventlet') not found)"),
    # Row 13: no worker to probe: refused at once, not after the boot timeout.
    ("workers = 0\n", "gunicorn.conf.py): gunicorn would start no worker to probe: set "
     "workers to 1 or more, or pass --workers N"),
])
def test_invalid_gunicorn_config_exits_2_with_its_own_error(run_cli, tmp_path, config, message):
    (tmp_path / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    (tmp_path / "gunicorn.conf.py").write_text(config)
    # Refused before any server or worker starts: no DSN needed.
    proc = run_cli("run", "--app", APP, "--chdir", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@integration
def test_gunicorn_cmd_args_errors_are_theirs(run_cli, tmp_path):
    (tmp_path / "app.py").write_text("def application(environ, start_response):\n    pass\n")
    proc = run_cli("run", "--app", APP, "--chdir", str(tmp_path),
                   env={"GUNICORN_CMD_ARGS": "--workers lots"})
    assert proc.returncode == 2
    assert "argument -w/--workers: invalid int value: 'lots'" in proc.stderr
    assert "Traceback" not in proc.stderr


@integration
def test_request_latency_shows_blocking_next_to_the_evidence(run_cli, tmp_path, pg_dsn):
    """Built-in builds, same run: users of the blocked psycopg2 workers wait far longer.

    In the request phase a blocked hub runs the greenlets' server waits one after
    another (8 × 0.15 s here) and the requests queue behind them, while a
    cooperating hub answers in about one query's time: measured 40× apart on a
    2-core VM. The test asks for 3×, a margin no healthy machine comes near.
    """
    out = tmp_path / "r.json"
    proc = run_app(run_cli, pg_dsn, out, "--builds", "psycopg2-green,psycopg2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    builds = by_build(load(out))
    green, plain = builds["psycopg2-green"], builds["psycopg2"]
    assert (green["verdict"], plain["verdict"]) == ("OK", "BLOCKING")
    g, p = green["metrics"]["requests"], plain["metrics"]["requests"]
    assert g["errors"] == 0 and g["completed"] == g["sent"] > 0 and p["completed"] > 0
    assert p["latency"]["p99_us"] >= 3 * g["latency"]["p99_us"], (p["latency"], g["latency"])
    # The table shows it, beside the in-worker evidence.
    assert "req p99 ms" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "psycopg2 †" in line)
    assert f"{p['latency']['p99_us'] / 1000:,.0f}" in row


@integration
def test_no_http_load_when_turned_off(run_cli, tmp_path, pg_dsn):
    profile = tmp_path / "p.toml"
    profile.write_text("[workload]\nhttp_rate = 0\n")
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--config", str(profile), "--builds", "binary",
                   "--json", str(out), env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 0, proc.stderr
    assert by_build(load(out))["binary"]["metrics"]["requests"] is None


def test_examples_are_documented():
    readme = (EXAMPLES / "README.md").read_text()
    for example, *_ in CASES:
        assert f"`{example}/`" in readme
        assert os.path.exists(EXAMPLES / example / "app.py")


# -- pure: no gunicorn, no server ---------------------------------------------------------


def test_conninfo_becomes_the_uri_apps_read():
    from geventprobe.dsn import conninfo_to_uri

    assert conninfo_to_uri("host=127.0.0.1 port=5433 user=geventprobe dbname=postgres") == \
        "postgresql://geventprobe@127.0.0.1:5433/postgres"
    assert conninfo_to_uri("host=db user=a password='p w' dbname=x sslmode=require") == \
        "postgresql://a:p%20w@db/x?sslmode=require"
    assert conninfo_to_uri("postgresql://u@h/d") == "postgresql://u@h/d"


def test_who_imported_it_names_the_users_line():
    from geventprobe.worker import import_watch

    lib = [("psycogreen/gevent.py:12", True), ("gunicorn.conf.py:15", False),
           ("gunicorn/arbiter.py:751", True)]
    assert import_watch._blame(lib) == "psycogreen/gevent.py:12 (from gunicorn.conf.py:15)"
    assert import_watch._blame([("app.py:9", False), ("gunicorn/util.py:1", True)]) == "app.py:9"
    assert import_watch._blame([("gunicorn/workers/ggevent.py:12", True)]) == \
        "gunicorn/workers/ggevent.py:12"
    event = {"phase": "master", "by": "app.py:9"}
    assert "(--preload / preload_app = True), by app.py:9" in import_watch.where(event, True)
    assert "before any worker was forked" in import_watch.where(event, False)


def app_facts(phase: str, in_master: bool, where: str) -> dict:
    return {"driver": "psycopg", "mode": "app", "select_patched": True,
            "psycopg": {"version": "3.3.8", "impl": "binary", "wait": "wait_c"},
            "env": {}, "driver_imported_in_master": in_master,
            "driver_import": {"select_patched": False, "phase": phase, "where": where}}


def test_app_causes_say_where_and_advise_for_that_place():
    from geventprobe.core.causes import explain

    cause, advice = explain(Verdict.BLOCKING, app_facts(
        "config", True, "in the gunicorn master, while gunicorn read the config file, by "
        "gunicorn.conf.py:12"), preload=True)
    # Imported by the config file: the config is the culprit, even with preload on.
    assert cause.endswith("by gunicorn.conf.py:12)") and "drop --preload" not in advice
    cause, advice = explain(Verdict.BLOCKING, app_facts("master", True, "x"), preload=True)
    assert "drop --preload" in advice
    cause, advice = explain(Verdict.BLOCKING, app_facts(
        "post_fork", False, "in the worker's post_fork hook"), preload=False)
    assert "post_fork hook" in cause and "post_fork" in advice


def test_app_summary_and_header():
    from rich.console import Console

    from geventprobe.app.gunicorn_app import summary
    from geventprobe.record import BuildResult, RunResult
    from geventprobe.report import run
    from geventprobe.report.formats import Terminal

    b = BuildResult(build=APP, description="", baseline=False, expected=None,
                    verdict=Verdict.BLOCKING, cause="psycopg2 has no wait callback",
                    advice="x", evidence=[], facts={"driver": "psycopg2", "mode": "app",
                                                    "psycopg2": {"version": "2.9.13",
                                                                 "wait_callback": None}},
                    metrics=None, workers=[])
    app = {"app": APP, "gunicorn_config": "gunicorn.conf.py", "chdir": "/srv", "workers": 3,
           "worker_class": "gevent", "their_worker_class": "sync", "worker_class_forced": True,
           "preload": False, "hooks": ["post_fork"], "overrides": ["bind 127.0.0.1:0"],
           "gunicorn_cmd_args": None}
    r = RunResult(schema_version=1, tool_version="0", started_at="", duration_s=1, command=[],
                  preload=False, profile={}, environment={}, server={}, builds=[b], summary="",
                  exit_code=1, app=app)
    assert summary(APP, r.builds, 1, None) == (
        f"your app {APP} is BLOCKING under this gunicorn config: psycopg2 has no wait "
        "callback")  # the exit code is the report's own slot, beside the sentence
    console = Console(record=True, width=200)
    Terminal(console).show(run.document(r))
    text = console.export_text()
    assert "forced: yours is sync" in text and "3 workers" in text and "hooks: post_fork" in text
    assert "your app under gunicorn" in text and "plain" in text and "2.9.13" in text


def test_gunicorn_cmd_args_are_recorded_without_secrets():
    from geventprobe.app.gunicorn_app import shown_cmd_args

    shown = shown_cmd_args("--workers 3 -e SECRET_KEY=abc -eAPI=xyz --env=TOKEN=t "
                           "--env DB=postgresql://u:pw@h/d --bind 0.0.0.0:8000")
    for secret in ("abc", "xyz", "=t ", "pw"):
        assert secret not in shown
    assert "--workers 3" in shown and "SECRET_KEY=***" in shown and "0.0.0.0:8000" in shown


def test_the_users_exit_hooks_run_when_the_probe_stops_gunicorn(run_cli, pg_dsn, tmp_path):
    # Once every figure is in, the workers are killed and gunicorn is told to quit once it
    # has reaped them (no replacement is started): the user's child_exit still runs for each
    # worker, and gunicorn's own quit path, with the user's on_exit, for the master.
    calls = tmp_path / "calls"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        'worker_class = "gevent"\nworkers = 2\n'
        f'def child_exit(server, worker):\n    open({str(calls)!r}, "a").write("child_exit\\n")\n'
        f'def on_exit(server):\n    open({str(calls)!r}, "a").write("on_exit\\n")\n')
    proc = run_app(run_cli, pg_dsn, tmp_path / "r.json", "--app", APP, "--chdir",
                   str(EXAMPLES / "pool_app"), "--gunicorn-config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls.read_text().splitlines() == ["child_exit", "child_exit", "on_exit"]
