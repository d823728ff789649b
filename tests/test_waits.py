"""Where the requests of a SERIALIZED route waited (core/waits.py), read from the parked-
greenlet samples real workers recorded (``worker/parked.py``).

``tests/data/causes/records/*.json`` were captured by ``benchmarks/capture_route_records.py``
running ``geventprobe run --app … --route …`` on the example apps (quick profile: 2
workers, 16 requests per burst); each holds the parent's figures of the route and every
worker's ``routes-<pid>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geventprobe.core import waits
from geventprobe.kinds.celery import task_rules

RECORDS = Path(__file__).parent / "data" / "causes" / "records"


def _load(name: str):
    data = json.loads((RECORDS / f"{name}.json").read_text())
    route = data["routes"][0]
    return data, route, waits.read(data["workers"], (route["t0"], route["t1"]))


def _busiest(data, route) -> tuple[int, int | None]:
    served = {pid: sum(1 for t in w["requests"] if route["t0"] - 0.01 <= t <= route["t1"])
              for pid, w in data["workers"].items()}
    pid = max(served, key=served.get)
    return served[pid], route["connections"].get(pid)


def _finding(name: str) -> waits.WaitFinding:
    data, route, found = _load(name)
    c, n = _busiest(data, route)
    finding = waits.classify(found, concurrency=c, connections=n)
    assert finding is not None
    return finding


def test_sqlalchemy_pool_of_one_is_a_pool_not_a_shared_connection():
    f = _finding("sqlalchemy_small_pool")
    assert f.kind == "pool" and f.holders == 1
    assert f.site.user_frame == "app.py:34 in application: with engine.connect() as conn:"
    assert f.site.entry.startswith("sqlalchemy/engine/base.py")
    assert f.cause.startswith(f"a pool of 1 connection for {f.concurrency} concurrent requests")
    assert "app.py:34 in application (`with engine.connect() as conn:`)" in f.cause
    assert "pool_size + max_overflow" in f.fix


def test_psycopg_pool_of_two():
    f = _finding("small_pool")
    assert f.kind == "pool" and f.holders == 2 and f.site.working == 2
    assert f.site.user_frame.startswith("app.py:33 in application")
    assert "psycopg_pool's max_size" in f.fix
    assert f.site.most >= 5  # 8+ requests a worker, 2 connections


@pytest.mark.parametrize("name", ["sqlalchemy_small_pool", "small_pool"])
def test_without_the_parents_connection_count_the_holders_say_n(name):
    _, _, found = _load(name)
    pool_size = {"sqlalchemy_small_pool": 1, "small_pool": 2}[name]
    assert waits.classify(found, concurrency=8).holders == pool_size


def test_working_greenlets_are_not_wait_sites():
    _, _, found = _load("small_pool")
    assert all("gevent/select.py" not in s.wait for s in found.sites)
    assert found.working_most == 2


def test_states():
    assert waits.state(["app.py:1 in f: x()", "psycopg/waiting.py:526 in wait_poll: …",
                        "gevent/select.py:348 in poll: result.event.wait(timeout=timeout)"]
                       ) == "working"
    assert waits.state(["app.py:1 in f: time.sleep(0.1)",
                        "gevent/hub.py:166 in sleep: hub.wait(t)"]) == "working"
    assert waits.state(["app.py:9 in f: with LOCK:",
                        "gevent/thread.py:320 in acquire: acquired = …"]) == "waiting"
    assert waits.state(["app.py:9 in f: with SEM:"]) == "waiting"  # a compiled primitive


def test_nothing_seen_nothing_said():
    assert waits.classify(waits.read({})) is None
    one = {"1": {"parked": {"stacks": [{"frames": ["app.py:9 in f: with LOCK:"], "user": 0}],
                            "samples": [{"t": 1.0, "parked": {"0": 3}}]}}}
    assert waits.classify(waits.read(one)) is None  # one sample: not evidence enough
    assert waits.classify(waits.read(one), min_seen=1).kind == "lock"


def test_celery_words():
    _, _, found = _load("small_pool")
    f = waits.classify(found, concurrency=8, setting=task_rules.DEPLOYMENT_WORDS[
        "concurrency_setting"], unit=task_rules.DEPLOYMENT_WORDS["unit"])
    assert "celery's -c" in f.fix and "tasks" in f.cause and "worker_connections" not in f.fix


def test_one_shared_psycopg_connection():
    f = _finding("shared_connection")
    assert f.kind == "shared-connection" and f.holders == 1
    assert f.site.user_frame == 'app.py:25 in application: conn.execute("SELECT pg_sleep(0.2)")'
    assert f.site.wait.startswith("psycopg/cursor.py:112 in execute")  # the connection's lock
    assert f.cause.startswith(f"one connection shared by {f.concurrency} concurrent requests")
    assert "its own connection" in f.fix


def test_a_lock_of_the_apps_is_not_a_shared_connection():
    """Today's rule said "0 server connection …: a connection shared between greenlets"
    for this app (tests/data/causes/records/app_lock.json was judged so)."""
    f = _finding("app_lock")
    assert f.kind == "lock"
    assert f.site.user_frame == "app.py:24 in call_upstream: with CLIENT_LOCK:"
    assert "a lock of the app's" in f.cause and "app.py:24 in call_upstream" in f.cause
    assert "connection" not in f.cause


def test_a_clean_route_shows_no_wait_site():
    _, _, found = _load("clean")
    assert found.sites == () and found.working_most >= 8


def test_a_thread_local_made_before_patching_is_named_beside_the_shared_connection():
    """A connection kept in a ``threading.local`` the app made before gevent patched (the
    binding its workers reported, ``worker/bindings.py``): every greenlet got the one object
    (examples/uwsgi/thread_local: SERIALIZED, 16 at once 3.23 s against 0.23 s made after)."""
    from geventprobe.core import route_causes
    from geventprobe.core.known_errors import Deployment

    data, route, _ = _load("shared_connection")
    c, n = _busiest(data, route)
    d = Deployment(concurrency=c, connections=n)
    window = (route["t0"], route["t1"])
    plain = route_causes.for_serialized(data["workers"], window, d)
    assert plain.kind == "shared-connection" and "threading.local" not in plain.cause
    workers = {pid: dict(w, bindings=[{
        "file": "app.py", "module": "app", "name": "_local", "original": "threading.local",
        "kind": "instance", "line": 12, "statement": "_local = threading.local()"}])
        for pid, w in data["workers"].items()}
    named = route_causes.for_serialized(workers, window, d)
    assert named.cause.startswith(plain.cause)
    assert ("the app keeps it in a threading.local made before gevent patched threading "
            "(app.py:12: `_local = threading.local()`)") in named.cause
    assert named.fix == ("make the threading.local after the worker patched: drop preload_app; "
                         f"or {plain.fix}")
