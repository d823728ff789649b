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
                    t1=T0 + max(latencies, default=0.0), connections=conns or {})


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


def test_a_beat_late_because_the_worker_waited_for_a_core_is_not_blocking():
    # A quick route on a loaded machine: one beat 90 ms late, 80 ms of which the hub's thread
    # was runnable but off a core (other programs had both). The kernel's, not the app's.
    healthy = run([0.02] * 16, lone=("200", 0.006))
    late = dataclasses.replace(worker(8, 0.001), heartbeat_lag=[0.001] * 5 + [0.09] + [0.001] * 994)
    waited = dataclasses.replace(late, heartbeat_waited=[0.0] * 5 + [0.08] + [0.0] * 994)
    assert judge(healthy, {1: waited}, T).verdict is Verdict.OK
    # The same beat with nothing waited for a core: the hub did not run 90 ms, BLOCKING.
    r = judge(healthy, {1: late}, T)
    assert r.verdict is Verdict.BLOCKING
    assert "not counting the time the worker waited for a core" in next(
        e.text for e in r.evidence if e.rule == "route-hub-lag")


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


# --- issue 19: routes that do not do their work, slow routes, killed workers -------------------

def answered(status: str, served: int = 16, **fields) -> tuple[RouteRun, dict]:
    """A route whose lone request and burst all answered ``status``; ``served`` requests
    reached the app in the burst (0: gunicorn answered them itself)."""
    rr = dataclasses.replace(run([0.002] * 16, statuses=[status] * 16, lone=(status, 0.002)),
                             **fields)
    return rr, {1: worker(served)}


def test_a_404_is_not_ok_it_was_not_measured():
    r = judge(*answered("404"), T)
    assert r.verdict is Verdict.ERROR and r.lone_status == 404
    assert r.cause == ("your app has no such route (404 Not Found): nothing of the route's "
                       "work was measured")
    assert next(e.rule for e in r.evidence if e.fired) == "route-not-served"
    assert exit_code([_app_with(r)], ("blocking", "failing")) == 2


def test_a_405_names_the_method():
    r = judge(*answered("405"), T)
    assert r.verdict is Verdict.ERROR
    assert r.cause.startswith("your app does not take GET at /query (405 Method Not Allowed)")


@pytest.mark.parametrize(("status", "why"), [
    ("414", "the request line is longer than gunicorn's limit_request_line"),
    ("400", "gunicorn could not parse the request")])
def test_an_answer_from_gunicorn_itself_is_an_error_with_why(status, why):
    r = judge(*answered(status, served=0), T)
    assert r.verdict is Verdict.ERROR
    assert r.cause.startswith(f"gunicorn answered {status} ")
    assert why in r.cause and r.note is None


@pytest.mark.parametrize(("status", "location", "start"), [
    ("302", "/login", "your app answered 302 Found to /login: requests carry no cookies"),
    ("401", None, "your app answered 401 Unauthorized: requests carry no cookies"),
    ("403", None, "your app answered 403 Forbidden:"),
    ("400", None, "your app answered 400 Bad Request:")])  # the app's 400: it saw the requests
def test_a_redirect_or_a_refusal_keeps_its_verdict_with_a_note(status, location, start):
    r = judge(*answered(status, location=location), T)
    assert r.verdict is Verdict.OK and r.note.startswith(start)
    assert judge(run([0.21] * 16), {1: worker(16)}, T).note is None


def test_a_lone_request_that_timed_out_names_http_timeout_s():
    rr = dataclasses.replace(run([], lone=("timeout", 30.0)), timeout_s=30.0,
                             burst_skipped="no burst: the lone request got no answer within "
                                           "http_timeout_s = 30 s")
    r = judge(rr, {1: worker(1)}, T)
    assert r.verdict is Verdict.FAILING
    assert r.cause.startswith("the lone request got no answer within http_timeout_s = 30 s")
    assert "raise http_timeout_s" in r.advice and "preload_app" not in r.advice
    assert "no burst" in r.evidence[0].text


def test_large_answers_without_a_connection_are_transfer_time():
    lat = [0.08 * (i + 1) for i in range(14)] + [0.08, 0.16]
    big = judge(run(lat, lone=("200", 0.084), conns={1: 0, 2: 0}), {1: worker(14),
                                                                    2: worker(2, pid=2)}, T)
    assert big.verdict is Verdict.SERIALIZED
    assert "shared" not in big.cause and "not the database" in big.cause
    rr = dataclasses.replace(run(lat, lone=("200", 0.084), conns={1: 0}), body_bytes=52428800)
    r = judge(rr, {1: worker(14)}, T)
    assert r.cause.startswith("each answer was 52.4 MB, and 14 went out of one worker at once")
    assert r.body_bytes == 52428800


def test_a_worker_timeout_during_a_route_is_blocking_before_failing():
    frames = ["gunicorn/workers/ggevent.py:1 in handle",
              'app.py:23 in application: h = hashlib.pbkdf2_hmac("sha256", b"pw")']
    events = [BlockedEvent(t=T0 + 0.1 * i, s=0.05, frames=frames, user=1) for i in range(5)]
    lines = ["[CRITICAL] WORKER TIMEOUT (pid:1)",
             "[ERROR] Worker (pid:1) was sent SIGKILL! Perhaps out of memory?"]
    rr = dataclasses.replace(run([0.3] * 7 + [1.1] * 9, statuses=["200"] * 7 + ["reset"] * 9),
                             timed_out=[1], log_lines=lines)
    r = judge(rr, {1: worker(8, 0.002, events)}, T, timeout_s=1)
    assert r.verdict is Verdict.BLOCKING
    assert r.evidence[0].rule == "route-worker-timeout"
    assert r.evidence[0].text == ("gunicorn killed worker 1 (WORKER TIMEOUT) during this route: "
                                  "its hub did not run for longer than your timeout 1 s")
    assert r.cause.startswith("the hub was blocked longer than gunicorn's timeout (1 s)")
    assert "app.py:23 in application" in r.cause
    assert r.first_error is None  # "Perhaps out of memory?" is gunicorn's guess, not the app's


def test_routes_after_a_killed_worker_are_not_distrusted_for_its_missing_report():
    killed = dataclasses.replace(run([0.21] * 16), timed_out=[2])
    later = run([0.21] * 16)
    phase = RoutesRun(routes=[killed, later], workers={1: worker(16)}, pids=[1, 2],
                      error="a worker did not report its route phase")
    first, second = judge_all(phase, T)
    assert first.verdict is Verdict.BLOCKING and second.verdict is Verdict.OK
    # Without the kill, the missing report leaves the OK route unwatched: not trusted.
    phase = dataclasses.replace(phase, routes=[later])
    assert judge_all(phase, T)[0].verdict is Verdict.ERROR


def test_a_phase_cut_short_leaves_every_route_an_error():
    phase = RoutesRun(routes=[run([0.21] * 16)], asked=[Route("GET", "/query"),
                                                       Route("GET", "/ok")], stopped=True,
                      error="the route phase was cut short: the gunicorn master (pid 9) was "
                            "killed by SIGKILL: nothing in its log says why")
    out = judge_all(phase, T)
    assert [(r.route, r.verdict) for r in out] == [("GET /query", Verdict.ERROR),
                                                   ("GET /ok", Verdict.ERROR)]
    assert all("was killed by SIGKILL" in r.cause for r in out)


def test_a_route_is_sent_as_ascii_and_the_reserved_path_is_refused_encoded():
    r = parse_route("/uni/café/日本?q=é")
    assert str(r) == "GET /uni/café/日本?q=é"  # shown as written
    assert r.target == "/uni/caf%C3%A9/%E6%97%A5%E6%9C%AC?q=%C3%A9"
    assert parse_route("/a%20b").target == "/a%20b"  # already encoded: left alone
    for text in ("/%5F_geventprobe__", "/%5f%5fgeventprobe%5f%5f?x=1"):
        with pytest.raises(ProbeError, match="is geventprobe's own route"):
            parse_route(text)


def test_a_long_route_is_cut_in_tables_not_in_the_record():
    r = judge(dataclasses.replace(run([0.21] * 16), route=Route("GET", "/ok?q=" + "a" * 5000)),
              {1: worker(16)}, T)
    assert len(r.route) == 5010 and len(r.shown) == 60 and r.shown.endswith("…")


def _app_with(route) -> BuildResult:
    return dataclasses.replace(_app(Verdict.OK), routes=[route])


# ---------------------------------------------------------------- causes without recorded samples
# (recorded runs of the example apps: tests/test_route_causes.py)

def _serialized(conns, parked=None):
    lat = [0.213 * (i + 1) for i in range(13)] + [0.213 * (i + 1) for i in range(3)]
    w1 = dataclasses.replace(worker(13), parked=parked or {})
    return judge(run(lat, conns=conns), {1: w1, 2: worker(3, pid=2)}, T)


def test_no_server_connection_is_never_a_shared_connection():
    # issue 19 row 7: a route with no database was told "0 server connection …: a connection
    # shared between greenlets".
    r = _serialized({1: 0, 2: 0})
    assert r.verdict is Verdict.SERIALIZED
    assert "shared" not in r.cause and "no server connection open: not the database" in r.cause
    assert r.cause_kind is None


def test_requests_seen_working_and_none_waiting_queue_outside_the_worker():
    working = {"frames": ["app.py:9 in application: stream(body)",
                          "gevent/_socketcommon.py:716 in send: return self._sock.send(data)"],
               "user": 0}
    samples = [{"t": T0 + 0.02 * i, "parked": {"0": 6}} for i in range(1, 20)]
    r = _serialized({1: 1, 2: 1}, {"stacks": [working], "samples": samples})
    assert r.cause_kind == "outside"
    assert "no request waited on a lock, pool or connection in the worker" in r.cause
    assert "up to 6 working at once" in r.cause and "shared" not in r.cause


def _blocking(events, deployment=None):
    return judge(run([0.3 * (i + 1) for i in range(8)]), {1: worker(8, 0.6, events)}, T,
                 deployment)


REGEX = ["gunicorn/workers/ggevent.py:1 in handle",
         "app.py:24 in validate: return PATTERN.match(value) is not None"]


def test_a_call_that_keeps_the_gil_gets_a_fix_without_threads():
    # Most sightings from the stall watch's alarm, one from the monitor (it took the GIL
    # while the alarm's handler ran): the GIL was held.
    events = [BlockedEvent(t=T0 + 0.05 * i, s=0.05, frames=REGEX, user=1, source="alarm",
                        gil_held=True)
              for i in range(5)]
    events.append(BlockedEvent(t=T0 + 0.3, s=0.1, frames=REGEX, user=1))
    r = _blocking(events)
    (stack,) = r.blocked_by
    assert stack.gil_held and r.cause_kind == "gil-held"
    assert "app.py:24 in validate" in r.cause and "kept the GIL" in r.cause
    assert "a thread does not help" in r.advice and "threadpool" not in r.advice
    assert "regular expression" in r.advice


def test_monitor_sightings_between_gil_holding_calls_do_not_outvote_the_alarm():
    # Three 0.2 s regex calls in a row hold the hub 0.6 s: the monitor thread gets the GIL
    # between two calls and sees the hub still held, in the same frame. Its sightings say
    # nothing about the GIL; only the alarm's judge it. The old rule (a majority of every
    # sighting) said "released" once a suite run's monitor saw the stack as often as the
    # alarm did (tests/test_stall_watch.py: 5 sightings, not GIL-held, 2026-12-05).
    events = [BlockedEvent(t=T0 + 0.2 * i, s=0.2, frames=REGEX, user=1, source="alarm",
                           gil_held=True) for i in range(2)]
    events += [BlockedEvent(t=T0 + 0.05 + 0.2 * i, s=0.05, frames=REGEX, user=1)
               for i in range(3)]
    (stack,) = blocked.stacks(events, "t")
    assert stack.count == 5 and stack.gil_held


def test_a_call_the_monitor_saw_released_the_gil():
    events = [BlockedEvent(t=T0 + 0.1 * i, s=0.1, frames=REGEX, user=1) for i in range(5)]
    r = _blocking(events)
    assert not r.blocked_by[0].gil_held and r.cause_kind == "blocking-call"
    assert "threadpool" in r.advice and "preload" not in r.advice


PSYCOPG2_PLAIN = {"driver": "psycopg2", "psycopg2": {"version": "2.9.13", "wait_callback": None}}
POLL = {"driver": "psycopg", "psycopg": {"version": "3.3.9", "wait": "wait_poll"},
        "select_patched": True}


def test_a_stall_in_a_database_call_of_a_driver_that_waits_in_c_is_the_drivers():
    from geventprobe.core import causes
    from geventprobe.core.known_errors import Deployment

    frames = ["app.py:30 in application: cur.execute('SELECT pg_sleep(0.2)')"]
    events = [BlockedEvent(t=T0 + 0.1 * i, s=0.1, frames=frames, user=0) for i in range(5)]
    d = Deployment(driver_blocking=causes.driver_blocking(PSYCOPG2_PLAIN, False))
    r = _blocking(events, d)
    assert r.cause_kind == "driver"
    assert "psycopg2 has no wait callback" in r.cause and "psycogreen" in r.advice
    # The same stall with a driver that cooperates is not the driver's.
    assert causes.driver_blocking(POLL, False) is None
    assert _blocking(events, Deployment()).cause_kind == "blocking-call"


def test_a_worker_timeout_never_blames_a_driver_that_cooperates():
    # issue 19 rows 14-15: gunicorn timeout = 1 and a CPU route: the app's row said
    # "psycopg's wait function wait_poll did not yield … report it to psycopg".
    from geventprobe.core import causes

    cause, advice = causes.worker_timeout(POLL, preload=False)
    assert "cooperates" in cause and "wait_poll yields" in cause
    assert "report it to psycopg" not in cause + advice and "preload" not in cause + advice
    cause, advice = causes.worker_timeout(PSYCOPG2_PLAIN, preload=False)
    assert "no wait callback" in cause and "psycogreen" in advice


def test_a_failure_without_a_traceback_names_preload_only_under_preload():
    from geventprobe.core.known_errors import Deployment

    lines = ["[2026-12-01 15:59:50 +0000] [28966] [ERROR] Error handling request GET /x"]
    failing = dataclasses.replace(run([0.004] * 16, statuses=["500"] * 16), log_lines=lines)
    r = judge(failing, {1: worker(16)}, T, Deployment(preload=False))
    assert r.verdict is Verdict.FAILING and "preload" not in r.cause + r.advice
    assert r.first_error.endswith("Error handling request GET /x")
    r = judge(failing, {1: worker(16)}, T, Deployment(preload=True))
    assert "preload_app" in r.advice
