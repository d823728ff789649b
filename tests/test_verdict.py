"""The verdict rules on figures recorded on a 2-core box (PostgreSQL 15, psycopg 3.3.8)."""

from __future__ import annotations

import dataclasses

import pytest

from geventprobe.core import causes
from geventprobe.core.rules import classify, evidence, exit_code, summary
from geventprobe.record import BuildMetrics, BuildResult, LatencySummary, Verdict
from geventprobe.settings import Thresholds

T = Thresholds()


def metrics(wait_factor: float, lag_ms: float, cpu: float | None, runnable: float | None = None,
            sleeps: float | None = None, greenlets: int = 16, w: float = 0.15) -> BuildMetrics:
    return BuildMetrics(
        workers=4, greenlets=greenlets, wait_seconds=w, wait_rounds=3, wait_factor=wait_factor,
        max_hub_lag_ms=lag_ms, cpu_during_waits=cpu, cpu_during_waits_median=cpu,
        machine_busy=0.3, select1=LatencySummary(100, 60, 90, 170, 900, 70),
        select1_qps=60000, cpu_per_query_us=20, latency_histogram={},
        runnable_during_waits=runnable, sleeps_per_s_during_waits=sleeps)


# (build, wait factor, max hub lag ms, CPU-s/s during waits) -> class, as measured.
RECORDED = [
    ("binary, patched first", 1.03, 6.3, 0.043, Verdict.OK),
    ("c, patched first", 1.04, 4.2, 0.062, Verdict.OK),
    ("python, patched first", 1.08, 12.0, 0.051, Verdict.OK),
    ("psycopg2 + psycogreen", 1.03, 3.8, 0.031, Verdict.OK),
    ("psycopg2, no callback", 16.10, 2413.7, 0.001, Verdict.BLOCKING),
    ("binary, --preload", 16.11, 2414.7, 0.003, Verdict.BLOCKING),
    ("c, --preload", 16.12, 2417.5, 0.004, Verdict.BLOCKING),
    ("binary, spinning wait", 1.07, 19.7, 0.389, Verdict.BUSY_WAIT),
    ("binary, spinning wait, busiest", 1.03, 9.6, 0.721, Verdict.BUSY_WAIT),
]


@pytest.mark.parametrize(("name", "factor", "lag", "cpu", "expected"), RECORDED,
                         ids=[r[0] for r in RECORDED])
def test_recorded_figures_get_their_class(name, factor, lag, cpu, expected):
    assert classify(evidence(metrics(factor, lag, cpu), T)) is expected


# Every core loaded by a CPU hog (2 busy loops on 2 cores): a spinning worker gets less
# CPU than the CPU rule's limit, but is still runnable all the time (CPU + run-queue wait).
LOADED = [
    ("binary, hog", 1.03, 8.0, 0.041, 0.056, 509, Verdict.OK),
    ("python, hog", 1.05, 12.0, 0.062, 0.162, 450, Verdict.OK),
    ("psycopg2 + psycogreen, hog", 1.03, 6.0, 0.043, 0.056, 491, Verdict.OK),
    ("psycopg2, hog", 16.1, 2414.0, 0.003, 0.004, 7, Verdict.BLOCKING),
    ("binary, spinning wait, hog", 1.14, 34.1, 0.120, 0.985, 7, Verdict.BUSY_WAIT),
    ("binary, spinning wait, hog, least runnable", 1.10, 20.0, 0.128, 0.941, 8,
     Verdict.BUSY_WAIT),
    # A healthy worker queued behind other programs wants a CPU half the time, but keeps
    # going to sleep (figures of this shape were seen under the test suite's own load).
    ("psycopg 3.1.4, machine crowded", 1.05, 30.0, 0.08, 0.50, 400, Verdict.OK),
]


@pytest.mark.parametrize(("name", "factor", "lag", "cpu", "runnable", "sleeps", "expected"),
                         LOADED, ids=[r[0] for r in LOADED])
def test_recorded_figures_under_load_get_their_class(name, factor, lag, cpu, runnable, sleeps,
                                                     expected):
    rules = evidence(metrics(factor, lag, cpu, runnable, sleeps), T)
    assert classify(rules) is expected


def test_cpu_alone_misses_a_starved_spinner_runnable_does_not():
    # Without schedstat (not Linux) only the CPU rule exists, and a starved spin is missed:
    # this is why the runnable rule exists.
    assert classify(evidence(metrics(1.14, 34.1, 0.120, None), T)) is Verdict.OK
    assert classify(evidence(metrics(1.14, 34.1, 0.120, 0.985, 7), T)) is Verdict.BUSY_WAIT


def test_blocking_wins_over_busy_wait():
    # A wait loop that spins without ever yielding both stalls the hub and burns CPU.
    assert classify(evidence(metrics(15.0, 2000, 0.9), T)) is Verdict.BLOCKING


def test_hub_lag_alone_is_blocking():
    # Windows that overlap but a hub stalled for most of w: partial blocking.
    rules = evidence(metrics(1.2, 100.0, 0.01), T)
    assert classify(rules) is Verdict.BLOCKING
    assert [e.rule for e in rules if e.fired] == ["hub-lag"]


def test_missing_cpu_figures_do_not_invent_a_busy_wait():
    rules = evidence(metrics(1.02, 3.0, None), T)
    assert classify(rules) is Verdict.OK
    assert "cpu-during-waits" not in {e.rule for e in rules}


# Idle connections (benchmarks/idle_cpu.py, docs/field-facts.md): every build sat at the
# heartbeat's floor, 0.029–0.066 CPU-s/s; a spinning wait on the same idle sockets took
# 0.83–1.00.
IDLE = [
    ("binary, 16 idle connections, worst round", 0.043, Verdict.OK),
    ("psycopg2 + psycogreen, LISTEN, worst round", 0.063, Verdict.OK),
    ("every build, the highest of all rounds", 0.066, Verdict.OK),
    ("spinning wait on idle sockets, weakest round", 0.833, Verdict.BUSY_WAIT),
    ("spinning wait on idle sockets, median", 0.98, Verdict.BUSY_WAIT),
]


@pytest.mark.parametrize(("name", "idle", "expected"), IDLE, ids=[r[0] for r in IDLE])
def test_cpu_while_idle_gets_its_class(name, idle, expected):
    m = dataclasses.replace(metrics(1.03, 6.3, 0.043), cpu_while_idle=idle)
    rules = evidence(m, T)
    assert classify(rules) is expected
    (e,) = [e for e in rules if e.rule == "cpu-while-idle"]
    assert e.phase == "idle" and e.fired is (expected is Verdict.BUSY_WAIT)


def test_an_idle_spin_has_its_own_cause_the_waits_keep_theirs():
    facts = {"driver": "psycopg", "psycopg": {"wait": "wait_c"}}
    cause, advice = causes.explain(Verdict.BUSY_WAIT, facts, False, {"idle"})
    assert "open and idle" in cause and "zero timeout" in advice
    cause, _ = causes.explain(Verdict.BUSY_WAIT, facts, False, {"waits", "idle"})
    assert "wait function" in cause  # spinning in the waits too: the waits' cause


def test_no_idle_window_no_idle_rule():
    rules = evidence(metrics(1.02, 3.0, 0.04), T)
    assert "cpu-while-idle" not in {e.rule for e in rules}


def test_evidence_states_its_numbers():
    texts = [e.text for e in evidence(metrics(16.1, 2413.7, 0.001), T)]
    assert "16.10× w" in texts[0] and "limit 2×" in texts[0]
    assert "2413.7 ms" in texts[1] and "limit 75 ms" in texts[1]


def result(build: str, verdict: Verdict, baseline: bool = False,
           expected: str | None = None) -> BuildResult:
    return BuildResult(build=build, description="", baseline=baseline, expected=expected,
                       verdict=verdict, cause=None, advice=None, evidence=[], facts={},
                       metrics=None, workers=[])


GOOD_BASELINES = [result("psycopg2-green", Verdict.OK, True, "OK"),
                  result("psycopg2", Verdict.BLOCKING, True, "BLOCKING")]


def test_exit_0_when_every_psycopg3_build_is_ok():
    builds = [result("binary", Verdict.OK), result("c", Verdict.UNAVAILABLE), *GOOD_BASELINES]
    assert exit_code(builds) == 0
    assert summary(builds, 0).startswith("psycopg 3 builds under test cooperate")
    assert "exit" not in summary(builds, 0)  # the report says the exit code beside it


def test_exit_1_for_a_regression():
    builds = [result("binary", Verdict.BLOCKING), result("python", Verdict.OK), *GOOD_BASELINES]
    assert exit_code(builds) == 1
    assert "binary BLOCKING" in summary(builds, 1)


def test_exit_3_when_the_positive_control_is_not_seen():
    builds = [result("binary", Verdict.BLOCKING), result("psycopg2", Verdict.OK, True, "BLOCKING")]
    assert exit_code(builds) == 3
    assert "INCONCLUSIVE" in summary(builds, 3)


def test_exit_2_when_a_probe_failed():
    builds = [result("binary", Verdict.ERROR), *GOOD_BASELINES]
    assert exit_code(builds) == 2


def test_exit_2_when_nothing_could_be_tested():
    assert exit_code([result("binary", Verdict.UNAVAILABLE)]) == 2


def test_summary_does_not_count_a_failed_probe_as_cooperating():
    builds = [result("binary", Verdict.ERROR), result("python", Verdict.OK), *GOOD_BASELINES]
    text = summary(builds, exit_code(builds))
    assert "probe failed for binary" in text
    assert "cooperate with gevent (python)" in text


def test_an_idle_spin_is_told_as_such_and_gets_no_wait_repro():
    from geventprobe.report import repro

    m = dataclasses.replace(metrics(1.03, 6.3, 0.043), cpu_while_idle=0.71)
    rules = evidence(m, T)
    b = dataclasses.replace(result("binary", classify(rules)), evidence=rules, metrics=m)
    assert b.verdict is Verdict.BUSY_WAIT and not repro.wanted(b)
    spinning = dataclasses.replace(b, evidence=evidence(metrics(1.07, 19.7, 0.389), T))
    assert repro.wanted(spinning)


def test_a_window_called_off_says_so_and_stays_blocking():
    # Recorded: psycopg2 without a callback, 4 workers × 16: the window was called off at
    # 4.03 × w, its hub 602 ms late, 13 of 16 sleeps called off.
    m = dataclasses.replace(metrics(4.03, 602.5, 0.008), wait_called_off=13)
    rules = evidence(m, T)
    assert classify(rules) is Verdict.BLOCKING
    wait = next(e for e in rules if e.rule == "wait-factor")
    assert wait.fired
    assert wait.text == ("16 concurrent pg_sleep(0.15) had taken 4.03× w with the hub stopped "
                         "when the 13 still waiting were called off (limit 2×; 16× if they "
                         "all ran one at a time)")
    plain = next(e for e in evidence(metrics(16.1, 2413.7, 0.001), T) if e.rule == "wait-factor")
    assert "called off" not in plain.text
