"""SERIALIZED minus what sharing the CPU explains (issue 24), and the warm-up (issue 25).

The recorded route phases of ``tests/data/cpu/`` were captured from real runs
(``benchmarks/capture_route_records.py``, quick profile, 2 workers, 16 requests per burst;
``-hogs``: two busy loops ran meanwhile) with the workers' main-thread clocks: the healthy
apps at their defaults (``examples/django_default``, ``examples/flask_sqlalchemy``), a
Django project whose URLconf builds a catalogue at import (``examples/django_catalogue``),
routes of a chosen cost (``benchmarks/apps/route_costs``) and the true SERIALIZED cases.
Judged again here, each gives the verdict it gave in that run; judged without the clocks
(the rule before issue 24), the healthy ones read SERIALIZED.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from route_records import load

from geventprobe.app import route_cpu, route_rules
from geventprobe.record import RouteResult, Verdict
from geventprobe.settings import Thresholds

RECORDS = Path(__file__).parent / "data" / "cpu"
T = Thresholds()


def judge(name: str, clocks: bool = True) -> dict[str, RouteResult]:
    """Each route of the recorded run ``name``, by route; ``clocks=False`` judges it as the
    rule did before it read the workers' CPU."""
    phase, deployment = load(RECORDS / f"{name}.json")
    if not clocks:
        phase.routes = [dataclasses.replace(r, clocks=[], clocks_due={}) for r in phase.routes]
    return {r.route: r for r in route_rules.judge_all(phase, T, deployment)}


def rule(r: RouteResult):
    (e,) = [e for e in r.evidence if e.rule == "route-serialized"]
    return e


# ---------------------------------------------------------------- healthy quick routes


@pytest.mark.parametrize(("name", "route"), [
    ("django_default", "GET /health/"), ("django_default-hogs", "GET /health/"),
    ("flask_sqlalchemy", "GET /health"), ("flask_sqlalchemy-hogs", "GET /health"),
    ("django_catalogue", "GET /health/"), ("costs", "GET /wait/20")])
def test_quick_routes_of_healthy_apps_are_ok(name, route):
    r = judge(name)[route]
    assert r.verdict is Verdict.OK, rule(r).text
    assert r.cause is None and not rule(r).fired
    assert r.cpu is not None and r.cpu.busy_ms > 0
    # The rule's figure: what the CPU does not explain, against the lone request.
    assert rule(r).value == pytest.approx(r.cpu.unexplained_ms / r.lone_ms, abs=1e-3)


@pytest.mark.parametrize(("name", "route"), [
    ("django_default", "GET /health/"), ("django_default-hogs", "GET /health/"),
    ("flask_sqlalchemy", "GET /health"), ("django_catalogue", "GET /health/")])
def test_without_the_cpu_they_read_serialized_and_the_note_says_why_not(name, route):
    before = judge(name, clocks=False)[route]
    assert before.verdict is Verdict.SERIALIZED  # the fault of issue 24, on real figures
    assert before.cause_kind == "outside" and before.cpu is None
    after = judge(name)[route]
    note = after.cpu.note
    assert note.startswith(f"16 at once took {before.burst.p90_us / 1000:.0f} ms (p90, ")
    assert f"{after.cpu.cpu_per_request_ms:.1f} ms of CPU per request in the worker" in note
    assert "a gevent worker runs one request's Python at a time" in note
    assert "none waited on another" in note and "a bigger pool does not" in note
    assert "not the database" not in note and "preload" not in note


def test_a_quick_route_that_would_not_fire_anyway_gets_no_note():
    r = judge("flask_sqlalchemy-hogs")["GET /health"]
    assert r.verdict is Verdict.OK and r.cpu.note is None
    assert judge("flask_sqlalchemy-hogs", clocks=False)["GET /health"].verdict is Verdict.OK


def test_the_evidence_shows_the_subtraction():
    text = rule(judge("django_default")["GET /health/"]).text
    assert text.startswith("burst p90 68.5 ms = 10.63× the lone request's 6.4 ms; the busiest "
                           "worker ran or waited for a core 67.8 ms of it, leaving 0.7 ms = "
                           "0.11× the lone request that the CPU does not explain (limit 1.8× "
                           "and 50 ms more; ")


def test_a_cpu_heavy_route_stays_blocking():
    # 20 ms of CPU per request without a yield: 8 of them back to back hold the hub.
    r = judge("costs")["GET /cpu/20"]
    assert r.verdict is Verdict.BLOCKING and r.cause_kind == "blocking-call"
    assert r.cpu.busy_ms > 0.9 * r.burst.p90_us / 1000  # and it is all CPU
    assert not rule(r).fired


# ---------------------------------------------------------------- the true SERIALIZED cases


@pytest.mark.parametrize(("name", "kind", "where"), [
    ("small_pool", "pool", "app.py:33 in application"),
    ("shared_connection", "shared-connection", "app.py:25 in application"),
    ("sqlalchemy_small_pool", "pool", "app.py:34 in application"),
    ("app_lock-hogs", "lock", "app.py:24 in call_upstream")])
def test_requests_that_wait_on_each_other_stay_serialized_with_their_line(name, kind, where):
    r = judge(name)[next(iter(judge(name)))]
    assert r.verdict is Verdict.SERIALIZED and r.cause_kind == kind, r.cause
    assert where in r.cause
    # The CPU explains a sliver of it: the rule still fires with room to spare.
    assert r.cpu.busy_ms < 0.1 * r.burst.p90_us / 1000
    assert rule(r).value >= 2 * T.route_serialized_factor
    assert r.cpu.note is None


# ---------------------------------------------------------------- the warm-up (issue 25)


def test_the_warm_up_takes_a_workers_first_request_and_says_what_it_stalled():
    r = judge("django_catalogue")["GET /health/"]
    assert r.verdict is Verdict.OK  # the route itself: a quick SELECT 1
    w = r.warm_up
    assert (w.workers_warmed, w.workers) == (2, 2) and w.max_hub_lag_ms >= T.route_hub_lag_ms
    assert w.note.startswith(f"each worker's first requests of the route (the warm-up before "
                             f"the measurement, {w.requests} requests) stalled its hub ")
    assert "shop/urls.py:" in w.note and w.blocked_by[0].user_frame.startswith("shop/urls.py:")
    assert "Each worker's first users wait that long after every deploy or restart" in w.note
    assert "django.urls.get_resolver().url_patterns" in w.note
    # The lone request and the burst were measured on warm workers: no stall of theirs.
    assert r.max_hub_lag_ms < T.route_hub_lag_ms and r.blocked_by == []


def test_a_quiet_warm_up_has_no_note():
    w = judge("django_default")["GET /health/"].warm_up
    assert w.max_hub_lag_ms < T.route_hub_lag_ms and w.note is None and w.blocked_by == []


# ---------------------------------------------------------------- the arithmetic


def test_share_reads_the_busiest_worker_at_the_p90_answer():
    due = {1: (0.0, 0.0), 2: (1.0, 0.0)}
    # 10 answers: the p90 one (9th by latency) ends at 0.09 s; worker 1 ran 0.06 s and waited
    # 0.02 s for a core by then, worker 2 ran 0.01 s.
    answered = [(0.01 * (i + 1), {1: (0.006 * (i + 1), 0.002 * (i + 1)),
                                  2: (1.0 + 0.001 * (i + 1), 0.0)}) for i in range(10)]
    cpu = route_cpu.share(answered, due, {1: 8, 2: 2}, lone_cpu_s=0.004)
    assert (cpu.busy_ms, cpu.ran_ms, cpu.waited_ms) == (72.0, 54.0, 18.0)
    assert cpu.unexplained_ms == pytest.approx(18.0)
    # The whole burst's CPU (to the last answer) over the 10 requests served.
    assert cpu.cpu_per_request_ms == pytest.approx(7.0) and cpu.lone_cpu_ms == 4.0


def test_a_worker_that_served_none_of_the_burst_explains_nothing():
    due = {1: (0.0, 0.0), 2: (0.0, 0.0)}
    # Worker 2 ran 0.1 s of something else; worker 1 served every request and slept.
    answered = [(0.2, {1: (0.002, 0.0), 2: (0.1, 0.0)})]
    cpu = route_cpu.share(answered, due, {1: 8, 2: 0})
    assert cpu.busy_ms == 2.0 and cpu.unexplained_ms == 198.0


def test_share_never_explains_more_than_the_latency():
    cpu = route_cpu.share([(0.05, {1: (0.04, 0.03)})], {1: (0.0, 0.0)}, {1: 1})
    assert cpu.busy_ms == 50.0 and cpu.unexplained_ms == 0.0


def test_without_every_answer_s_clocks_nothing_is_explained():
    due = {1: (0.0, 0.0)}
    assert route_cpu.share([(0.05, None)], due, {1: 1}) is None
    assert route_cpu.share([(0.05, {1: (0.01, 0.0)}), (0.06, {})], due, {1: 2}) is None
    assert route_cpu.share([(0.05, {1: (0.01, 0.0)})], {}, {1: 1}) is None
