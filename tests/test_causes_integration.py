"""The issue-20 hooks in real gunicorn workers, end to end (one run each, ~30 s).

- who blocked under a held GIL: ``examples/regex_route`` through ``geventprobe run --app
  … --route /validate``: the route is BLOCKING and its stack names ``app.py:24 in
  validate`` (before the stall watch, gevent's monitor thread saw nothing: "who blocked"
  was empty, tests/data/causes/today-regex_route.json);
- the route phase's new records (``parked``, ``bindings``) reach the parent and give the
  SERIALIZED cause: ``examples/sqlalchemy_small_pool`` read with ``core/route_causes`` is
  a pool of 1, not "a connection shared between greenlets".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geventprobe.app import route_rules
from geventprobe.core import route_causes
from geventprobe.core.known_errors import Deployment
from geventprobe.processes.postgres import EmbeddedPostgres

integration = pytest.mark.integration
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=60) as pg:
        yield pg.dsn


@integration
def test_who_blocked_when_the_gil_is_held(run_cli, pg_dsn, tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--profile", "quick", "--json", str(out), "--app", "app:application",
                   "--chdir", str(EXAMPLES / "regex_route"), "--route", "/validate",
                   env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (r,) = json.loads(out.read_text())["builds"][0]["routes"]
    assert r["verdict"] == "BLOCKING", r["evidence"]
    assert r["blocked_by"], "who blocked is empty"
    assert r["blocked_by"][0]["user_frame"].startswith("app.py:24 in validate")
    assert "app.py:24 in validate" in r["cause"]


@integration
def test_the_route_phase_records_where_requests_waited(pg_dsn, monkeypatch, tmp_path):
    """In-process (the CLI's own entry point), to keep what the route rules receive."""
    from geventprobe import cli

    kept = {}
    judge_all = route_rules.judge_all

    def keep(phase, t):
        kept["phase"] = phase
        return judge_all(phase, t)

    monkeypatch.setattr(route_rules, "judge_all", keep)
    monkeypatch.setenv("GEVENTPROBE_DSN", pg_dsn)
    monkeypatch.setattr("sys.argv", [
        "geventprobe", "run", "--profile", "quick", "--json", str(tmp_path / "r.json"),
        "--app", "app:application", "--chdir", str(EXAMPLES / "sqlalchemy_small_pool"),
        "--route", "/query"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 1
    phase = kept["phase"]
    (run,) = phase.routes
    assert all(w.parked.get("looks") for w in phase.workers.values())
    found = route_causes.serialized(phase.workers, (run.t0, run.t1),
                                    Deployment(concurrency=8, connections=1))
    assert found is not None and found.kind == "pool" and found.holders == 1
    assert "app.py:34 in application" in found.cause
