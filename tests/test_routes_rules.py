"""The route rules on recorded figures (no processes): each class, its cause, the exit code.

The figures are those of the example apps' runs on a 2-core VM (docs/routes.md): a lone
0.2 s query, then 16 concurrent requests over 2 workers.
"""

from __future__ import annotations

import dataclasses

import pytest

from geventprobe.app.route_rules import judge, judge_all
from geventprobe.app.routes import Route, RouteRun, RoutesRun, first_error, parse_route
from geventprobe.core import blocked
from geventprobe.core.rules import exit_code
from geventprobe.errors import ProbeError
from geventprobe.record import BuildResult, Verdict
from geventprobe.settings import Thresholds, parse_fail_on
from geventprobe.worker.record import BlockedEvent, RoutePhase

T = Thresholds()
T0 = 1000.0


def worker(requests: int, lag_s: float = 0.002, events=(), pid: int = 1) -> RoutePhase:
    ticks = [T0 + i * 0.002 for i in range(1000)]
    return RoutePhase(pid=pid, heartbeat_expected=ticks, heartbeat_lag=[lag_s] * len(ticks),
                      requests=[T0 + 0.001] * requests, blocked=list(events))


def run(latencies, statuses=None, lone=("200", 0.213), conns=None) -> RouteRun:
    statuses = statuses or ["200"] * len(latencies)
    return RouteRun(route=Route("GET", "/query"), concurrency=8, lone_status=lone[0],
                    lone_s=lone[1], burst=list(zip(statuses, latencies)), t0=T0,
                    t1=T0 + max(latencies), connections=conns or {})


def test_overlapping_requests_are_ok():
    r = judge(run([0.218] * 14 + [0.248] * 2, conns={1: 17, 2: 5}),
              {1: worker(13), 2: worker(3)}, T)
    assert r.verdict is Verdict.OK and r.cause is None
    assert r.burst_factor == pytest.approx(0.248 / 0.213, rel=1e-3)


def test_one_shared_connection_is_serialized_and_says_so():
    lat = [0.213 * (i + 1) for i in range(13)] + [0.213 * (i + 1) for i in range(3)]
    r = judge(run(lat, conns={1: 1, 2: 1}), {1: worker(13), 2: worker(3)}, T)
    assert r.verdict is Verdict.SERIALIZED
    assert r.cause == ("1 server connection for 13 concurrent requests: a connection shared "
                       "between greenlets")
    assert r.server_connections == 1


def test_small_pool_is_serialized_and_says_so():
    lat = sorted([0.22 * (i // 2 + 1) for i in range(15)] + [0.22])
    r = judge(run(lat, conns={1: 2, 2: 2}), {1: worker(15), 2: worker(1)}, T)
    assert r.verdict is Verdict.SERIALIZED
    assert r.cause.startswith("2 server connections for 15 concurrent requests: the pool is "
                              "smaller than the concurrency")


def test_quick_requests_sharing_the_cpu_are_not_serialized():
    # 8 requests of 2 ms each, one after another on the CPU: 8×, but 14 ms is no finding.
    r = judge(run([0.002 * (i + 1) for i in range(8)], lone=("200", 0.002)), {1: worker(8)}, T)
    assert r.verdict is Verdict.OK


def test_hub_stall_is_blocking_with_who_blocked():
    frames = ["gunicorn/workers/ggevent.py:1 in handle", "app.py:19 in login: return "
              "hashlib.pbkdf2_hmac(...)"]
    events = [BlockedEvent(t=T0 + 0.1 * i, s=0.05, frames=frames, user=1) for i in range(6)]
    events.append(BlockedEvent(t=T0 - 5, s=0.05, frames=["elsewhere.py:1 in x"], user=0))
    r = judge(run([0.3 * (i + 1) for i in range(8)]), {1: worker(8, 0.6, events)}, T)
    assert r.verdict is Verdict.BLOCKING
    (stack,) = r.blocked_by  # the event outside the burst is not its business
    assert (stack.count, stack.blocked_s) == (6, 0.3)
    assert stack.user_frame.startswith("app.py:19 in login")
    assert "blocked 6 times, 0.30 s in all: app.py:19 in login" in r.cause


def test_5xx_is_failing_with_the_first_error_line_and_wins_over_the_rest():
    lines = ["[2026-11-27] [ERROR] Internal Server Error: /items", "Traceback (most recent…",
             "  File \"x.py\", line 1, in f",
             "django.db.utils.DatabaseError: DatabaseWrapper objects created in a thread…",
             "ValueError: later"]
    rr = dataclasses.replace(run([0.004] * 16, statuses=["500"] * 16, lone=("500", 0.002)),
                             log_lines=lines)
    r = judge(rr, {1: worker(16, 0.5)}, T)
    assert r.verdict is Verdict.FAILING and r.lone_ms is None and r.lone_status == 500
    assert r.first_error.startswith("django.db.utils.DatabaseError: DatabaseWrapper")
    assert r.statuses == {"500": 16}


def test_a_small_share_of_failures_is_tolerated_but_not_more():
    ok = ["200"] * 15
    assert judge(run([0.21] * 16, statuses=[*ok, "reset"]), {1: worker(16)},
                 T).verdict is Verdict.OK
    assert judge(run([0.21] * 16, statuses=["200"] * 13 + ["timeout"] * 3), {1: worker(16)},
                 T).verdict is Verdict.FAILING


def test_first_error_falls_back_to_gunicorns_error_line():
    assert first_error(["x", "[ERROR] Error handling request /a", "y"]) == \
        "[ERROR] Error handling request /a"
    assert first_error(["all fine"]) is None


def test_a_phase_that_could_not_run_is_an_error():
    (r,) = judge_all(RoutesRun(error="the workers did not get ready for the routes"), T)
    assert r.verdict is Verdict.ERROR


@pytest.mark.parametrize(("text", "route"), [
    ("/login", "GET /login"), ("post /login", "POST /login"), ("/a?b=1", "GET /a?b=1")])
def test_routes_parse(text, route):
    assert str(parse_route(text)) == route


@pytest.mark.parametrize("text", ["login", "GET", "FETCH /x", "GET /a b", "/__geventprobe__"])
def test_bad_routes_are_refused(text):
    with pytest.raises(ProbeError):
        parse_route(text)


def _app(routes_verdict: Verdict) -> BuildResult:
    r = judge(run([0.21] * 16), {1: worker(16)}, T)
    r = dataclasses.replace(r, verdict=routes_verdict)
    return BuildResult(build="app:application", description="", baseline=False, expected=None,
                       verdict=Verdict.OK, cause=None, advice=None, evidence=[], facts={},
                       metrics=None, workers=[], routes=[r])


def test_route_verdicts_decide_the_exit_code():
    every = parse_fail_on("blocking,busy-wait,serialized,failing", "--fail-on")
    assert exit_code([_app(Verdict.OK)], every) == 0
    for v in (Verdict.SERIALIZED, Verdict.FAILING, Verdict.BLOCKING):
        assert exit_code([_app(v)], every) == 1
    assert exit_code([_app(Verdict.SERIALIZED)], ("blocking", "failing")) == 0
    assert exit_code([_app(Verdict.ERROR)], every) == 2


def test_stacks_are_counted_and_ordered():
    a = BlockedEvent(t=1.0, s=0.05, frames=["a.py:1 in f"], user=0)
    b = BlockedEvent(t=1.0, s=0.05, frames=["b.py:1 in g"], user=None)
    out = blocked.stacks([a, b, a, a], "waits")
    assert [(s.frames, s.count, s.user_frame) for s in out] == [
        (["a.py:1 in f"], 3, "a.py:1 in f"), (["b.py:1 in g"], 1, None)]


def _hold_the_hub(seconds: float) -> None:
    import time

    time.sleep(seconds)  # not gevent's: nothing else runs meanwhile


def test_monitor_catches_who_blocked_and_marks_the_users_frame():
    """gevent's real monitor thread, in this process: a 0.3 s block is seen, with its line."""
    import gevent

    from geventprobe.worker.monitor import Monitor

    monitor = Monitor(0.05).start()
    try:
        gevent.sleep(0.02)
        _hold_the_hub(0.3)
        gevent.sleep(0.02)
    finally:
        events = monitor.stop()
    assert gevent.config.monitor_thread is False
    assert len(events) >= 2, events
    e = events[0]
    assert "in _hold_the_hub: time.sleep(seconds)" in e.frames[e.user]
    assert "test_routes_rules.py:" in e.frames[e.user]


def test_user_code_is_told_from_libraries():
    from geventprobe.worker.monitor import is_user_code

    assert is_user_code("/srv/shop/views.py")
    for path in ("/usr/lib/python3.11/hashlib.py", "/v/lib/python3.12/site-packages/x/y.py",
                 "/v/lib/python3.12/site-packages/gevent/hub.py", "<frozen runpy>"):
        assert not is_user_code(path), path
