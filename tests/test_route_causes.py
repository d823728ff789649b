"""The issue-20 causes from what a real route phase recorded, one example app each.

Each record (``tests/data/causes/records/<example>.json``, captured by
``benchmarks/capture_route_records.py`` from ``geventprobe run --app … --route …
--profile quick``) holds what ``app/route_rules.judge`` receives: the parent's figures of
the route (log lines, burst window, server connections) and every worker's route-phase
file. ``core/route_causes`` turns them into the cause and fix; no words name preload
unless the run preloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geventprobe.core import blocked, route_causes
from geventprobe.core.known_errors import Deployment
from geventprobe.worker.record import BlockedEvent

RECORDS = Path(__file__).parent / "data" / "causes" / "records"
EXAMPLES = "/work/wt/causes/examples/"  # where the records were taken
PRELOADED = {"preload_sleep", "master_connection"}


def _case(name: str):
    data = json.loads((RECORDS / f"{name}.json").read_text())
    run = data["routes"][0]
    workers = {int(pid): w for pid, w in data["workers"].items()}
    # As the route rules count it: the app's requests each worker started in the burst.
    served = {pid: sum(1 for t in w["requests"] if run["t0"] - 0.01 <= t <= run["t1"])
              for pid, w in workers.items()}
    busiest = max(served, key=lambda p: (served[p], -p))
    conns = {int(k): v for k, v in run["connections"].items()}
    d = Deployment(preload=name in PRELOADED, concurrency=served[busiest],
                   connections=conns.get(busiest), root=EXAMPLES + name)
    return run, workers, d


def _words(*texts: str) -> str:
    return " ".join(texts).lower()


def test_pool_timeout():
    run, _, d = _case("pool_timeout")
    out = route_causes.failing(run["log_lines"], d)
    assert out.first_error == "psycopg_pool.PoolTimeout: couldn't get a connection after 0.50 sec"
    assert out.explained.key == "pool-timeout"
    assert "at app.py:29 in application" in out.explained.cause
    assert "preload" not in _words(out.explained.cause, out.explained.fix)


def test_psycopg2_shared_connection():
    run, _, d = _case("psycopg2_shared")
    out = route_causes.failing(run["log_lines"], d)
    assert out.error.type == "psycopg2.ProgrammingError"
    assert out.explained.key == "shared-connection"
    assert "app.py:35 in application" in out.explained.cause
    assert "its own connection" in out.explained.fix
    assert "preload" not in _words(out.explained.cause, out.explained.fix)


@pytest.mark.parametrize("name, kind, line", [
    ("sqlalchemy_small_pool", "pool", "app.py:34 in application"),
    ("small_pool", "pool", "app.py:33 in application"),
    ("shared_connection", "shared-connection", "app.py:25 in application"),
    ("app_lock", "lock", "app.py:23 in call_upstream"),
])
def test_serialized(name, kind, line):
    run, workers, d = _case(name)
    out = route_causes.serialized(workers, (run["t0"], run["t1"]), d)
    assert out is not None and out.kind == kind
    assert line in out.cause
    assert "preload" not in _words(out.cause, out.fix)


def test_preload_sleep_names_the_binding_and_preload():
    run, workers, d = _case("preload_sleep")
    events = [BlockedEvent(t=e["t"], s=e["s"], frames=e["frames"], user=e["user"])
              for w in workers.values() for e in w["blocked"]]
    stacks = blocked.stacks(events, "route", (run["t0"], run["t1"] + 0.05))
    out = route_causes.blocking(stacks, workers, d)
    assert out is not None and out.binding.original == "time.sleep"
    assert "`from time import sleep" in out.cause and "at app.py:17" in out.cause
    assert "app.py:22 in call_upstream" in out.cause
    assert "preload_app" in out.cause and "`import time`" in out.fix


def test_master_connection_only_under_preload():
    run, _, d = _case("master_connection")
    out = route_causes.failing(run["log_lines"], d)
    assert out.explained.key == "master-connection"
    assert "app.py:29 in application" in out.explained.cause


def test_regex_route_who_blocked_under_a_held_gil():
    run, workers, _ = _case("regex_route")
    events = [BlockedEvent(t=e["t"], s=e["s"], frames=e["frames"], user=e["user"])
              for w in workers.values() for e in w["blocked"]]
    stacks = blocked.stacks(events, "route", (run["t0"], run["t1"] + 0.05))
    assert stacks, "who blocked is empty"
    assert stacks[0].user_frame.startswith("app.py:24 in validate")
