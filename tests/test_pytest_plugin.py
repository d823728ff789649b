"""The Python API and the pytest plugin against real PostgreSQL, gunicorn and gevent workers.

Three real sessions, kept small (``--profile quick``, the examples' 1-2 workers):

- the API's record against ``geventprobe run --json`` for the same settings, field for
  field (what is measured aside), on the Flask example with ``--route auto``;
- one pytest session (under pytest-xdist, one worker process) running three example
  tests: the Django project broken (BLOCKING: fails with the verdict, cause and fix) and
  fixed (passes), the Flask app broken (SERIALIZED), all against one PostgreSQL (by pid),
  nothing left after, although two tests failed;
- a session interrupted by Ctrl-C in the middle of a probe: nothing left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

import geventprobe
from geventprobe.report import json_format, load

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pytest"
DJANGO = EXAMPLES / "django" / "fixed"

MEASURED = {
    # When it ran and how long each part took.
    "started_at", "duration_s", "timings",
    # Figures measured in the workers and by the parent, and the words that quote them.
    "metrics", "evidence", "blocked_by", "lone_ms", "burst", "burst_factor", "statuses",
    "max_hub_lag_ms", "server_connections", "body_bytes", "load_average",
    # What sharing the CPU explained of a burst, and how long a route's warm-up took.
    "cpu", "seconds",
    # Each worker's figures (the build's ``workers``; the app's ``workers`` is a count).
    "workers",
    # Process ids and clock readings of the workers' facts (who imported what, when).
    "pid", "time",
    # The throwaway server's port, the connections open when the run began.
    "dsn", "connections_in_use", "role_connections_in_use",
}
"""Fields that differ between two runs of the same settings because they are measured."""


def _same(api: object, cli: object, where: str = "") -> list[str]:
    """Where the two records differ, measured fields aside (each record's structure whole)."""
    if isinstance(api, dict) and isinstance(cli, dict):
        out = [f"{where}: keys {sorted(set(api) ^ set(cli))}"] if set(api) != set(cli) else []
        for key in api.keys() & cli.keys():
            if key not in MEASURED or (key == "workers" and not isinstance(api[key], list)):
                out += _same(api[key], cli[key], f"{where}.{key}")
        return out
    if isinstance(api, list) and isinstance(cli, list):
        if len(api) != len(cli):
            return [f"{where}: {len(api)} items against {len(cli)}"]
        return [d for i, (a, c) in enumerate(zip(api, cli)) for d in _same(a, c, f"{where}[{i}]")]
    return [] if api == cli else [f"{where}: {api!r} != {cli!r}"]


def test_the_api_record_is_what_run_json_writes(run_cli, probe_tmp, tmp_path, monkeypatch):
    """``probe_app(...)`` and ``run --app ... --json`` for the same settings: the same record,
    field for field (what is measured aside), and ``explain()`` is what ``run`` printed."""
    config = str(DJANGO / "gunicorn.conf.py")
    out = tmp_path / "cli.json"
    app = "mysite.wsgi:application"
    flags = ["--app", app, "--gunicorn-config", config, "--chdir", str(DJANGO),
             "--workers", "1", "--profile", "quick", "--route", "auto", "--route-exclude",
             "/account/"]
    cli = run_cli("run", *flags, "--json", str(out), timeout=180)
    assert cli.returncode == 0, cli.stdout + cli.stderr

    monkeypatch.setenv("TMPDIR", probe_tmp)
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    for name in [k for k in os.environ if k.startswith(("PG", "GEVENTPROBE"))]:
        monkeypatch.delenv(name)
    result = geventprobe.probe_app(app, gunicorn_config=config, chdir=DJANGO, workers=1,
                                   profile="quick", routes="auto", route_exclude=["/account/"])

    written = json.loads(out.read_text())
    assert written["command"][-2:] == ["--json", str(out)]
    written["command"] = written["command"][:-2]
    differ = _same(json_format.to_dict(result), written)
    assert differ == [], "\n".join(differ)
    assert result.ok and result.verdicts == {app: "OK", "GET /": "OK", "GET /items/": "OK"}
    found = result.app["routes_found"]
    assert found["found"] == ["GET /", "GET /items/"] and found["excluded"] == ["GET /account/"]
    # explain() words the findings as the terminal does: byte for byte what run printed.
    assert load.load(str(out)).explain() == cli.stdout


def _processes_started_by(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _cmdline(p: psutil.Process) -> str:
    """Its command line; empty once it has exited (the short-lived ones exit as we read)."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def test_one_session_three_probes_one_server_nothing_left(probe_tmp, tmp_path):
    """Django broken fails with the verdict, cause and fix, Django fixed passes, Flask broken
    fails SERIALIZED; one PostgreSQL for the three (under pytest-xdist, one worker process);
    nothing running and no temp dir after the session, although two tests failed."""
    records = tmp_path / "records"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    tests = [str(EXAMPLES / e / "test_gevent.py")
             for e in ("django/broken", "django/fixed", "flask/broken")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = probe_tmp
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "-p",
         "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp"),
         "--import-mode=importlib", "-n", "1", "-p", "xdist",
         "--geventprobe-profile", "quick", "--geventprobe-json", str(records), *tests],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout
    assert proc.returncode == 1, text + proc.stderr
    assert re.search(r"\b2 failed, 1 passed\b", text), text
    # The failure names the verdict, the cause and the fix, as the CLI does.
    assert "mysite.wsgi:application: BLOCKING" in text
    assert "cause: psycopg2 has no wait callback, so libpq waits in C" in text
    assert "fix: call psycogreen.gevent.patch_psycopg() in post_worker_init" in text
    assert "GET /items: SERIALIZED" in text

    summary = text.split("= geventprobe =", 1)[1]
    pids = re.findall(r"embedded PostgreSQL pid (\d+)\]", summary)
    assert len(pids) == 3 and len(set(pids)) == 1, summary
    assert not psutil.pid_exists(int(pids[0]))

    by_test = {p.name.split("_test_gevent")[0]: json.loads(p.read_text())
               for p in records.glob("*.json")}
    assert len(by_test) == 3, sorted(by_test)
    ports = {re.search(r"port=(\d+)", r["server"]["dsn"]).group(1) for r in by_test.values()}
    assert len(ports) == 1
    verdicts = {}
    for name, record in by_test.items():
        app = record["builds"][0]
        assert [r["route"] for r in app["routes"]] == record["app"]["routes_found"]["found"]
        verdicts[name] = (app["verdict"], {r["route"]: r["verdict"] for r in app["routes"]})
    django = ["GET /", "GET /items/", "GET /account/"]
    assert verdicts[next(k for k in verdicts if "django_broken" in k)][0] == "BLOCKING"
    fixed = verdicts[next(k for k in verdicts if "django_fixed" in k)]
    assert fixed == ("OK", dict.fromkeys(django, "OK"))
    flask = verdicts[next(k for k in verdicts if "flask_broken" in k)]
    assert flask == ("OK", {"GET /": "OK", "GET /items": "SERIALIZED", "GET /account": "OK"})


def test_ctrl_c_in_the_middle_of_a_probe_leaves_nothing(probe_tmp, tmp_path):
    """SIGINT while the workers of a probe run: pytest stops, the probe's gunicorn and the
    session's PostgreSQL are stopped and their temp dirs removed (``probe_tmp`` checks)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = probe_tmp
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "-p",
         "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp"),
         "--geventprobe-profile", "quick", str(EXAMPLES / "django" / "fixed" / "test_gevent.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As from a terminal: a test runner started in the background ignores SIGINT, and
        # its children would inherit that (the probe then ran to its end, exit 0).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until gunicorn's workers run the probe
            names = " ".join(_cmdline(p) for p in _processes_started_by(proc.pid))
            if names.count("gunicorn") >= 3:  # the master and its two workers
                break
            time.sleep(0.02)
        else:
            pytest.fail("gunicorn never started")
        proc.send_signal(signal.SIGINT)  # while they boot or probe
        interrupted = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        # Its gunicorn's workers, still in the probe, do not act on their master's quit:
        # they are killed, not waited for (the app's graceful timeout, 30 s, cut to 10 s:
        # 11.5-13.9 s measured before; about 1 s since).
        back_s = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert back_s < 8, f"{back_s:.1f} s after Ctrl-C\n{output}"
