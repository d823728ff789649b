"""``geventprobe run --uwsgi`` / ``--uwsgi-cmd`` with real uWSGI (pyuwsgi) gevent workers.

Each example of ``examples/uwsgi`` runs through the CLI as its manifest says (the class
there is the one the harness shows with plain uWSGI: 3.09-3.11 s for 16 at once when
BLOCKING, 0.23-0.25 s when OK); the cause must be in uWSGI's words and the exit code must
follow. Then what a user gets wrong (one line, exit 2, nothing left running) and what a
kill -9 of geventprobe leaves (nothing). One throwaway PostgreSQL serves the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from manifests import EXAMPLES, case_id, cases, geventprobe_class

from geventprobe.processes.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

UWSGI_CASES = [(e, c) for e, c in cases() if e.startswith("uwsgi/")]
# Words the cause must hold, by example and case: what a user must change, in uWSGI's words.
CAUSES = {
    ("uwsgi/psycopg3_top", "monkey-patch"): "--gevent-monkey-patch patches each worker when",
    ("uwsgi/psycopg3_top", "no-patch-flag"): "patches nothing without a patch flag",
    ("uwsgi/psycopg2_plain", None): "psycopg2 has no wait callback",
    ("uwsgi/thread_local", "monkey-patch"): "threading.local made before gevent patched",
}
FIXES = {
    ("uwsgi/psycopg3_top", "monkey-patch"): "use --gevent-early-monkey-patch",
    ("uwsgi/psycopg3_top", "no-patch-flag"): "add --gevent-early-monkey-patch",
    ("uwsgi/psycopg2_plain", None): "psycogreen.gevent.patch_psycopg()",
    ("uwsgi/thread_local", "monkey-patch"): "use --gevent-early-monkey-patch",
}


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=80) as pg:
        yield pg.dsn


def _env(pg_dsn: str) -> dict:
    # `uwsgi` as a user's shell in this venv finds it.
    return {"GEVENTPROBE_DSN": pg_dsn,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize("example, c", UWSGI_CASES,
                         ids=[case_id(e, c) for e, c in UWSGI_CASES])
def test_examples_through_uwsgi_cmd(run_cli, pg_dsn, tmp_path, schema, example, c):
    import jsonschema

    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), *c["geventprobe"],
                   cwd=str(EXAMPLES / example), env=_env(pg_dsn))
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    (build,) = result["builds"]
    assert geventprobe_class(build) == c["expect"], proc.stdout + proc.stderr
    assert proc.returncode == (0 if c["expect"] == "OK" else 1), proc.stdout + proc.stderr
    assert result["app"]["kind"] == "uwsgi"
    key = (example, c.get("name"))
    if key in CAUSES:  # the one that is not OK says why: the app, or else its route
        said = build if build["verdict"] != "OK" else build["routes"][0]
        assert CAUSES[key] in said["cause"], said["cause"]
        assert FIXES[key] in said["advice"], said["advice"]
        assert "gunicorn" not in said["cause"] + said["advice"]
    # Every request of the request phase was answered by the app's workers, blocked or not.
    requests = build["metrics"]["requests"]
    assert requests["errors"] == 0, requests
    (route,) = build["routes"]
    assert route["verdict"] == c["expect"], route
    if route["verdict"] == "BLOCKING":
        # Every request of the route stalls the hub, the first ones too: no note that says
        # to do "that work as the worker starts" (a wrong fix; it was given once).
        assert route["warm_up"]["note"] is None, route["warm_up"]["note"]
    assert "uWSGI" in proc.stdout and "gunicorn" not in proc.stdout, proc.stdout


def test_uwsgi_app_under_uwsgis_defaults_patches_nothing(run_cli, pg_dsn, tmp_path):
    """``--uwsgi APP``: uWSGI's defaults, no patch flag: psycopg at the app's top blocks."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--uwsgi", "app.py",
                   "--workers", "2", cwd=str(EXAMPLES / "uwsgi" / "psycopg3_top"),
                   env=_env(pg_dsn))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (build,) = result["builds"]
    assert build["verdict"] == "BLOCKING"
    assert "patches nothing without a patch flag" in build["cause"]
    assert result["app"]["processes"] == 2 and len(build["workers"]) == 2


def test_lazy_apps_loads_in_the_worker_and_still_blocks(run_cli, pg_dsn, tmp_path):
    """``--lazy-apps`` loads the app (a module this time) in each worker, after the fork but
    still before ``--gevent-monkey-patch`` patches it: BLOCKING, and the cause says where.
    (uWSGI imports the probe's hook in each worker then: its workers once never got ready.)"""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--uwsgi-cmd",
                   "uwsgi --master --processes 2 --gevent 17 --gevent-monkey-patch --lazy-apps "
                   "--module app:application", cwd=str(EXAMPLES / "uwsgi" / "psycopg3_top"),
                   env=_env(pg_dsn))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (build,) = result["builds"]
    assert build["verdict"] == "BLOCKING" and len(build["workers"]) == 2
    assert "in the uWSGI worker, while it loaded the app (lazy-apps), by app.py:8" in \
        build["cause"], build["cause"]
    assert result["app"]["lazy_apps"] is True and result["app"]["app"] == "module = app:application"


def test_their_ini_runs_on_loopback_with_their_settings_and_no_secret_shows(
        run_cli, pg_dsn, tmp_path):
    """``uwsgi --ini uwsgi.ini``, as most deployments start it: their public socket, stats
    server and recycling are replaced (each said), the rest applies (2 processes, their
    patch flag), and a password in the ini reaches no output and no command line."""
    app = (EXAMPLES / "uwsgi" / "psycopg3_top" / "app.py").read_text()
    (tmp_path / "app.py").write_text(app)
    (tmp_path / "uwsgi.ini").write_text(
        "[uwsgi]\nhttp-socket = 0.0.0.0:8000\nstats = 127.0.0.1:9191\nmaster = true\n"
        "processes = 2\ngevent = 17\ngevent-early-monkey-patch = true\n"
        "module = app:application\nmax-requests = 100\n"
        "env = REPORTING_URL=postgresql://app:hunter2secret@10.0.0.9/reports\n")
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--markdown",
                   str(tmp_path / "r.md"), "--uwsgi-cmd", "uwsgi --ini uwsgi.ini",
                   cwd=str(tmp_path), env=_env(pg_dsn))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (build,) = result["builds"]
    assert build["verdict"] == "OK" and len(build["workers"]) == 2
    overrides = " ".join(result["app"]["overrides"])
    for said in ("no http-socket (yours: 0.0.0.0:8000)", "no stats (yours: 127.0.0.1:9191)",
                 "no max-requests (yours: 100)"):
        assert said in overrides, overrides
    everything = proc.stdout + proc.stderr + out.read_text() + (tmp_path / "r.md").read_text()
    assert "hunter2secret" not in everything
    assert result["app"]["patch"] == "--gevent-early-monkey-patch"


def test_from_pytest_through_the_fixture(pg_dsn, probe_tmp, tmp_path):
    """The plugin's ``geventprobe.uwsgi(...)`` (``probe_uwsgi``): the usual flag fails the
    test with the verdict, the cause and the fix; the early flag passes."""
    here = EXAMPLES / "uwsgi" / "psycopg3_top"
    (tmp_path / "test_gevent.py").write_text(f"""
BASE = "uwsgi --master --processes 1 --gevent 17 --wsgi-file app.py "


def test_usual_flag(geventprobe):
    result = geventprobe.uwsgi(command=BASE + "--gevent-monkey-patch", chdir={str(here)!r},
                               routes="/query")
    assert result.ok, result.explain()


def test_early_flag(geventprobe):
    result = geventprobe.uwsgi(command=BASE + "--gevent-early-monkey-patch",
                               chdir={str(here)!r})
    assert result.ok, result.explain()
""")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env.update(_env(pg_dsn), TMPDIR=probe_tmp)
    env.pop("GEVENTPROBE_DSN")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "-p",
         "no:cacheprovider", "--geventprobe-profile", "quick", "--geventprobe-dsn", pg_dsn,
         str(tmp_path / "test_gevent.py")], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300)
    text = proc.stdout
    assert proc.returncode == 1 and "1 failed, 1 passed" in text, text + proc.stderr
    assert "app.py: BLOCKING" in text and "use --gevent-early-monkey-patch" in text, text


def test_an_unmodified_django_project_fails_under_the_usual_flag(run_cli, pg_dsn, tmp_path):
    """examples/django_default under ``--gevent-monkey-patch``: the master loads the app
    before the workers patch threading, Django's connection object is the master thread's,
    and every request fails (the plain harness: 16 of 16 answered nothing, OK with
    ``--gevent-early-monkey-patch``). The cause says so in uWSGI's words."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--uwsgi-cmd",
                   "uwsgi --master --processes 1 --gevent 17 --gevent-monkey-patch "
                   "--module mysite.wsgi:application", "--route", "/health/",
                   cwd=str(EXAMPLES / "django_default"), env=_env(pg_dsn))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (build,) = json.loads(out.read_text())["builds"]
    (route,) = build["routes"]
    assert route["verdict"] == "FAILING", route
    assert "made in the uWSGI master" in route["cause"], route["cause"]
    assert "use --gevent-early-monkey-patch" in route["advice"], route["advice"]
    assert "gunicorn" not in route["cause"] + route["advice"]


def test_route_auto_finds_a_django_projects_routes_as_uwsgi_loads_it(run_cli, pg_dsn, tmp_path,
                                                                    schema):
    """``--route auto`` under uWSGI: the routes of examples/django_default are listed in a
    child that imports the app as uWSGI does (its module, its directory), the admin's are
    excluded, the rest probed under the early patch flag: OK, exit 0."""
    import jsonschema

    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--uwsgi-cmd",
                   "uwsgi --master --processes 1 --gevent 17 --gevent-early-monkey-patch "
                   "--module mysite.wsgi:application", "--route", "auto",
                   "--route-exclude", "/admin/*", cwd=str(EXAMPLES / "django_default"),
                   env=_env(pg_dsn))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    found = result["app"]["routes_found"]
    assert found["framework"] == "django" and found["found"] == ["GET /health/"], found
    assert "GET /admin/" in found["excluded"] or "/admin/" in found["excluded"], found
    (build,) = result["builds"]
    assert [(r["route"], r["verdict"]) for r in build["routes"]] == [("GET /health/", "OK")]
    assert "routes found in the Django URLconf" in proc.stdout, proc.stdout


def test_the_driver_builds_under_uwsgi(run_cli, pg_dsn, tmp_path, schema):
    """``run --server uwsgi``: the five builds under uWSGI with the patch before the app loads
    (``--gevent-early-monkey-patch``): psycopg 3's builds and psycogreen cooperate, psycopg2
    alone blocks (its known class), exit 0; the report speaks of uWSGI, never gunicorn."""
    import jsonschema

    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--server", "uwsgi", "--workers", "2",
                   "--json", str(out), cwd=str(tmp_path), env=_env(pg_dsn))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    verdicts = {b["build"]: b["verdict"] for b in result["builds"]}
    assert verdicts == {"binary": "OK", "c": "OK", "python": "OK", "psycopg2-green": "OK",
                        "psycopg2": "BLOCKING"}, proc.stdout
    assert result["app"]["kind"] == "uwsgi-builds"
    assert result["app"]["patch"] == "--gevent-early-monkey-patch"
    assert all(len(b["workers"]) == 2 for b in result["builds"])
    assert all(b["facts"]["uwsgi"]["version"] for b in result["builds"])
    assert "PostgreSQL drivers under uWSGI --gevent" in proc.stdout
    assert "gunicorn" not in proc.stdout, proc.stdout


def test_the_driver_builds_under_their_usual_flag(run_cli, pg_dsn, tmp_path):
    """``--server uwsgi --uwsgi-cmd "uwsgi --gevent-monkey-patch"``: the same builds under the
    flag most configurations copy: psycopg 3 is imported by the app before uWSGI patches, so
    it blocks (the cause and fix in uWSGI's words); psycogreen still cooperates; exit 1."""
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--server", "uwsgi", "--uwsgi-cmd",
                   "uwsgi --master --processes 2 --gevent 16 --gevent-monkey-patch",
                   "--builds", "binary,psycopg2-green,psycopg2", "--json", str(out),
                   cwd=str(tmp_path), env=_env(pg_dsn))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    rows = {b["build"]: b for b in result["builds"]}
    assert {k: b["verdict"] for k, b in rows.items()} == {
        "binary": "BLOCKING", "psycopg2-green": "OK", "psycopg2": "BLOCKING"}, proc.stdout
    binary = rows["binary"]
    assert "--gevent-monkey-patch patches each worker" in binary["cause"], binary["cause"]
    assert "by geventprobe/worker/harness_app.py" in binary["cause"], binary["cause"]
    assert "use --gevent-early-monkey-patch" in binary["advice"]
    assert result["app"]["how"] == "command" and result["app"]["processes"] == 2


def test_a_build_that_does_not_import_where_uwsgi_runs_is_unavailable(run_cli, pg_dsn,
                                                                     tmp_path):
    """Every build's uWSGI boots ahead, and its first worker says whether the driver imports
    in the Python uWSGI runs, with the paths their command adds: psycopg's C build hidden
    from it there (``--pythonpath``), not from us, is UNAVAILABLE with the reason and the
    install command; the others are measured. (When the builds were checked in our own
    interpreter instead, c passed that check, and its workers then failed: an ERROR row.)"""
    hide = tmp_path / "hide" / "psycopg_c"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('not installed here: psycopg_c')\n")
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--server", "uwsgi", "--uwsgi-cmd",
                   "uwsgi --master --processes 1 --gevent 16 --gevent-early-monkey-patch "
                   f"--pythonpath {hide.parent}", "--json", str(out),
                   cwd=str(tmp_path), env=_env(pg_dsn))
    rows = {b["build"]: b for b in json.loads(out.read_text())["builds"]}
    assert rows["c"]["verdict"] == "UNAVAILABLE", proc.stdout + proc.stderr
    assert "not installed here: psycopg_c" in rows["c"]["cause"]
    assert rows["c"]["install"].endswith('pip install "psycopg[c]=='
                                         f'{rows["binary"]["facts"]["psycopg"]["version"]}"')
    assert rows["binary"]["verdict"] == "OK" and proc.returncode == 0, proc.stdout


def test_a_plain_run_checks_the_uwsgi_app_pyproject_names(run_cli, pg_dsn, tmp_path):
    """``uwsgi-cmd`` and ``routes`` in ``[tool.geventprobe]``: a plain ``geventprobe run`` in
    the project checks the uWSGI app (its route too), as a CI step would."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "uwsgi" / "psycopg3_top", project)
    (project / "pyproject.toml").write_text(
        '[tool.geventprobe]\nuwsgi-cmd = "uwsgi --master --processes 1 --gevent 17 '
        '--gevent-monkey-patch --wsgi-file app.py"\nroutes = ["/query"]\n')
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), cwd=str(project),
                   env=_env(pg_dsn))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (build,) = result["builds"]
    assert result["app"]["kind"] == "uwsgi" and build["verdict"] == "BLOCKING"
    assert [r["route"] for r in build["routes"]] == ["GET /query"]


def _one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["--uwsgi-cmd", "no-such-uwsgi --module app"], "cannot start 'no-such-uwsgi'"),
    (["--uwsgi-cmd", "uwsgi --no-such-option-here"], "uWSGI refused your configuration"),
    (["--uwsgi-cmd", "uwsgi --master --gevent 4"], "loads no app"),
    (["--uwsgi-cmd", "uwsgi --mount /a=app:application"], "mounts several apps"),
    (["--uwsgi", "app.py", "--app", "app:application"], "run them one at a time"),
    (["--uwsgi", "app.py", "--uwsgi-cmd", "uwsgi"], "give one"),
    (["--uwsgi", "app.py", "--preload"], "--preload is gunicorn's"),
    (["--uwsgi", "app.py", "--route-exclude", "/admin/*"], "add --route auto"),
    (["--uwsgi", "app.py", "--route", "auto"], "--route auto lists the routes of a Django or "
                                              "Flask app"),
    (["--server", "uwsgi", "--uwsgi", "app.py"], "--server picks the server"),
    (["--server", "uwsgi", "--uwsgi-cmd", "uwsgi --module app:application"],
     "runs the built-in builds as the app"),
    (["--server", "uwsgi", "--psycopg", "3.3.9"], "run a version matrix under gunicorn"),
    (["--server", "uwsgi", "--route", "/x"], "the built-in builds have none"),
    (["--server", "uwsgi", "--calibrate"], "runs its controls under gunicorn"),
    (["--server", "gunicorn", "--uwsgi-cmd", "uwsgi"], "drop one"),
], ids=["missing-uwsgi", "bad-option", "no-app", "mount", "with-app", "both", "preload",
        "exclude-without-auto", "route-auto-plain-wsgi", "server-with-app",
        "server-cmd-with-app", "server-matrix", "server-route", "server-calibrate",
        "gunicorn-with-cmd"])
def test_bad_input_is_one_line(run_cli, tmp_path, args, words):
    proc = run_cli("run", *args, cwd=str(EXAMPLES / "uwsgi" / "psycopg3_top"),
                   env={"GEVENTPROBE_DSN": "host=127.0.0.1 port=1 user=x dbname=x",
                        **{k: v for k, v in _env("").items() if k == "PATH"}})
    assert words in _one_line_exit_2(proc)


def test_an_app_that_fails_to_load_says_why(run_cli, pg_dsn, tmp_path):
    (tmp_path / "broken.py").write_text("import os\nraise RuntimeError('no settings here')\n")
    proc = run_cli("run", "--profile", "quick", "--uwsgi", "broken.py", cwd=str(tmp_path),
                   env=_env(pg_dsn))
    line = _one_line_exit_2(proc)
    assert "RuntimeError: no settings here (broken.py, line 2)" in line, line
    assert "uWSGI master" in line


def test_an_app_whose_import_never_ends_is_named_not_waited_for(run_cli, pg_dsn, tmp_path):
    """The master imports the app and never finishes: after the profile's boot timeout, one
    line names the import, exit 2, and uWSGI is stopped (the fixture checks)."""
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(3600)\n")
    (tmp_path / "short.toml").write_text("[workload]\nboot_timeout_s = 2\n")
    proc = run_cli("run", "--profile", "quick", "--config", str(tmp_path / "short.toml"),
                   "--uwsgi", "slow.py", cwd=str(tmp_path), env=_env(pg_dsn))
    line = _one_line_exit_2(proc)
    assert "your app was still importing in the uWSGI master" in line, line
    assert "boot_timeout_s" in line


def test_kill_9_leaves_no_uwsgi_no_server_and_no_temp_dir(tmp_path, probe_tmp):
    """geventprobe SIGKILLed mid-run: its watchdog stops uWSGI and the embedded PostgreSQL
    and removes their directories (each process checked by pid)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env.update(PATH=_env("")["PATH"], TMPDIR=probe_tmp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geventprobe", "run", "--profile", "quick", "--uwsgi-cmd",
         "uwsgi --master --processes 2 --gevent 17 --gevent-monkey-patch --wsgi-file app.py"],
        cwd=str(EXAMPLES / "uwsgi" / "psycopg3_top"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)
    try:
        seen: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 3:
            seen = [p for p in psutil.process_iter(["cmdline", "environ"])
                    if "uwsgi" in " ".join(p.info["cmdline"] or [])
                    and (p.info["environ"] or {}).get("GEVENTPROBE_RUN_DIR", "").startswith(
                        probe_tmp)]
            time.sleep(0.1)
        assert len(seen) >= 3, "uWSGI's master and 2 workers never showed up"
        # Before the next scan: psutil's process_iter replaces the .info of the same objects.
        dirs = {p.info["environ"]["GEVENTPROBE_RUN_DIR"] for p in seen}
        servers = [p for p in psutil.process_iter(["cmdline"])
                   if "postgres" in " ".join(p.info["cmdline"] or [])
                   and probe_tmp in " ".join(p.info["cmdline"] or [])]
        assert servers, "the embedded PostgreSQL was not found under the run's TMPDIR"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _gone, alive = psutil.wait_procs(seen + servers, timeout=20)
        assert not alive, [p.pid for p in alive]
        deadline = time.monotonic() + 10
        while any(os.path.exists(d) for d in dirs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(os.path.exists(d) for d in dirs), dirs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_harakiri_kill_is_evidence_in_uwsgis_words():
    """A worker harakiri killed is BLOCKING evidence, in uWSGI's words (recorded figures:
    the log's HARAKIRI pids of a run)."""
    from types import SimpleNamespace

    from geventprobe import settings
    from geventprobe.app.wsgi_run import WorkersRun
    from geventprobe.core import judge
    from geventprobe.core.builds import Build
    from geventprobe.core.known_errors import Deployment
    from geventprobe.kinds.uwsgi.app import WORDS

    profile = settings.load_profile(None)
    subject = SimpleNamespace(build=Build(name="app.py", baseline=False, expected=None, env={},
                                          description="your app app.py"), preload=True)
    run = WorkersRun(timed_out_pids=[24383, 24444], timeout_s=3)
    row = judge.judge(subject, run, profile.workload, profile.thresholds, time.monotonic(),
                      words=Deployment(**WORDS))
    assert row.verdict.value == "BLOCKING"
    assert row.evidence[0].text == ("uWSGI's harakiri killed worker 24383, 24444: its hub did "
                                    "not run for longer than harakiri 3 s")
