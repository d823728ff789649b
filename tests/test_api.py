"""The Python API and ``--route auto`` without a probe run: bad input, the recorded command,
the found routes of the example apps, the record's ``ok``/``verdicts``/``explain``, and the
pytest plugin's switches (``-p no:geventprobe``, nothing started unless a test asks).

The real runs (the API's record against ``run --json``, the plugin's shared server,
Ctrl-C) are in ``tests/test_pytest_plugin.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import geventprobe
from geventprobe import api
from geventprobe.app import route_finder
from geventprobe.core.plan import RunRequest
from geventprobe.record import Verdict
from geventprobe.report import load
from geventprobe.report.formats import Terminal
from geventprobe.worker.record import AppRoutes, FoundRoute

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pytest"
DATA = Path(__file__).parent / "data"
WRAPPER = ["--config", "python:geventprobe.worker.app_conf", "--bind", "127.0.0.1:0"]


def _cli_error(*args: str, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    proc = subprocess.run([sys.executable, "-m", "geventprobe", "run", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    return proc.stderr.strip()


def test_the_api_is_imported_on_first_use_only():
    """``import geventprobe`` stays import-free (gunicorn's master loads the package)."""
    code = ("import sys, geventprobe; assert 'geventprobe.api' not in sys.modules; "
            "geventprobe.probe_app; assert 'geventprobe.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert geventprobe.ProbeError is api.ProbeError


@pytest.mark.parametrize(("call", "flags"), [
    (lambda: geventprobe.probe_app("not a spec!"), ["--app", "not a spec!"]),
    (lambda: geventprobe.probe_app("app:app", chdir="/no/such/dir"),
     ["--app", "app:app", "--chdir", "/no/such/dir"]),
    (lambda: geventprobe.probe_app("app:app", route_exclude=["/admin/*"]),
     ["--app", "app:app", "--route-exclude", "/admin/*"]),
    (lambda: geventprobe.probe_drivers(builds=["nope"]), ["--builds", "nope"]),
    (lambda: geventprobe.probe_drivers(server="uwsgi", psycopg=["3.3.9"]),
     ["--server", "uwsgi", "--psycopg", "3.3.9"]),
    (lambda: geventprobe.probe_celery("proj", tasks=["not a name!"]),
     ["--celery", "proj", "--task", "not a name!"]),
])
def test_bad_input_raises_the_line_the_cli_prints(call, flags, probe_tmp, monkeypatch):
    monkeypatch.setenv("TMPDIR", probe_tmp)
    with pytest.raises(geventprobe.ProbeError) as caught:
        call()
    assert caught.value.exit_code == 2
    assert _cli_error(*flags) == f"geventprobe: error: {caught.value}"


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"workers": 0}, "workers=0 is not a whole number from 1 to 64"),
    ({"greenlets": 1.5}, "greenlets=1.5 is not a whole number"),
    ({"rtt_ms": float("nan")}, "rtt_ms=nan is not a round trip"),
    ({"time_limit_s": 0}, "time_limit_s=0 is not a number of seconds"),
    ({"dsn": "  "}, "the DSN is empty"),
    ({"dsn": "mysql://x"}, "mysql:// is not a PostgreSQL URL"),
    ({"routes": ["/a b c"]}, "--route '/a b c' is not a route"),
])
def test_bad_settings_are_one_line(kwargs, words):
    with pytest.raises(geventprobe.ProbeError, match="^" + words.replace("(", r"\(")):
        geventprobe.probe_app("app:app", **kwargs)


def test_the_record_says_the_command_that_runs_it_again():
    request = RunRequest(command=[], app="mysite.wsgi:application", chdir="/srv/site",
                         routes=("auto", "POST /login"), route_exclude=("/admin/*",),
                         workers=2, rtt_ms=20.0, profile="quick", dsn="host=db password=x")
    assert api.as_command(request) == [
        "geventprobe", "run", "--app", "mysite.wsgi:application", "--chdir", "/srv/site",
        "--workers", "2", "--rtt", "20", "--profile", "quick", "--route", "auto", "--route",
        "POST /login", "--route-exclude", "/admin/*"]
    assert api._tasks(["a.b", ("c.d", [1], {"k": 2})]) == (
        ("a.b", "c.d"), ("[]", "[1]"), ("{}", '{"k": 2}'))


def test_found_routes_are_sorted_with_their_reasons():
    listed = AppRoutes(ok=True, framework="django", routes=[
        FoundRoute("/", [], [], "v.index"),
        FoundRoute("/items/", ["GET", "POST"], [], "v.items"),
        FoundRoute("/items/<int:pk>/", [], ["pk"], "v.item"),
        FoundRoute("/orders/", ["POST"], [], "v.Orders"),
        FoundRoute("/archive/[0-9]+/", [], [], "v.archive", fixed=False),
        FoundRoute("/admin/", [], [], "admin.index"),
        FoundRoute("/admin/users/", [], [], "admin.users"),
        FoundRoute("/items/", [], [], "v.shadowed"),
    ])
    found = route_finder.sort(listed, ("/admin/*", "GET /admin/"))
    assert [str(r) for r in found.routes] == ["GET /", "GET /items/"]
    assert found.skipped == (("/items/<int:pk>/", "needs parameters: pk"),
                             ("POST /orders/", "no GET: answers POST"),
                             ("/archive/[0-9]+/", "a regular expression, not one path"))
    assert found.excluded == ("GET /admin/", "GET /admin/users/")


@pytest.mark.parametrize(("example", "app", "found", "skipped"), [
    ("django/broken", "mysite.wsgi:application", ["GET /", "GET /items/", "GET /account/"],
     [("/items/<int:pk>/", "needs parameters: pk"), ("POST /orders/", "no GET: answers POST")]),
    ("flask/fixed", "app:app", ["GET /", "GET /items", "GET /account"],
     [("/static/<path:filename>", "needs parameters: filename"),
      ("/items/<int:item_id>", "needs parameters: item_id"),
      ("POST /orders", "no GET: answers POST")]),
])
def test_route_auto_lists_the_examples_parameterless_get_routes(example, app, found, skipped,
                                                                probe_tmp, monkeypatch):
    """Read from the URLconf / url_map in a throwaway child: exactly the GET routes without
    parameters (the login one included: it shows at probe time), the others with why."""
    monkeypatch.setenv("TMPDIR", probe_tmp)
    chdir = EXAMPLES / example
    env = dict(os.environ, TMPDIR=probe_tmp,
               GEVENTPROBE_USER_CONFIG=str(chdir / "gunicorn.conf.py"))
    result = route_finder.find([*WRAPPER, app], str(chdir), env, 60)
    assert [str(r) for r in result.routes] == found
    assert list(result.skipped) == skipped


def test_route_auto_on_an_app_that_is_neither_django_nor_flask(probe_tmp, monkeypatch):
    monkeypatch.setenv("TMPDIR", probe_tmp)
    line = _cli_error("--app", "app:application", "--chdir", "examples/clean", "--route",
                      "auto")
    assert line == ("geventprobe: error: --route auto lists the routes of a Django or Flask "
                    "app, and app:application is a plain WSGI function, neither Django nor "
                    "Flask: name its routes with --route PATH instead")


def test_ok_verdicts_and_explain_read_the_record():
    result = load.load(str(DATA / "run-app-routes.json"))
    assert result.ok is (result.exit_code == 0)
    app = result.builds[0]
    assert result.verdicts[app.build] is app.verdict
    assert {r.route: r.verdict for r in app.routes}.items() <= result.verdicts.items()
    assert all(isinstance(v, Verdict) for v in result.verdicts.values())
    # explain(): the terminal's words, without colour, at the width of a pipe.
    from rich.console import Console

    console = Console(width=100, color_system=None, force_terminal=False, highlight=False,
                      record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    from geventprobe.report import run

    Terminal(console).show(run.document(result))
    console.file.close()
    assert result.explain() == console.export_text()
    assert "\x1b[" not in result.explain()
    assert repr(result).startswith(f"RunResult(exit_code={result.exit_code}, verdicts={{")


def _pytest(tmp_path: Path, *args: str, test: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(textwrap.dedent(test))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_plugin_is_registered_and_p_no_geventprobe_turns_it_off(tmp_path):
    test = """
        def test_uses_it(geventprobe):
            pass
        """
    on = _pytest(tmp_path, "--fixtures", test=test)
    assert "geventprobe -- " in on.stdout or "geventprobe [" in on.stdout, on.stdout
    off = _pytest(tmp_path, "-p", "no:geventprobe", test=test)
    assert off.returncode == 1
    assert "fixture 'geventprobe' not found" in off.stdout


def test_the_plugin_starts_nothing_unless_a_test_uses_it(tmp_path):
    """A session without the fixture: no server, no summary section, no temp dir."""
    proc = _pytest(tmp_path, "--geventprobe-profile", "quick", "-s", test="""
        import os, psutil

        def test_plain():
            me = psutil.Process()
            assert not [c for c in me.children(recursive=True)]
            assert not [p for p in os.listdir(os.environ["TMPDIR"])
                        if p.startswith("geventprobe-")]
        """)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "= geventprobe =" not in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["pytest.ini", "test_it.py"]
