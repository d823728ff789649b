"""The connect phase: its figures, its rule and its cause, on figures recorded on a 2-core box.

Recorded with `geventprobe run --workers 4` (16 greenlets, loopback PostgreSQL 15,
psycopg 3.3.8): every connect window as (wall ms, latest heartbeat lag ms) per worker.
"""

from __future__ import annotations

import pytest

from geventprobe.core import causes, metrics
from geventprobe.core.rules import classify, connect_evidence
from geventprobe.record import LatencySummary, Verdict, WorkerFigures
from geventprobe.settings import Thresholds
from geventprobe.worker.record import ConnectPhase, ProbeResult

T = Thresholds()


def worker(windows: list[tuple[float, float]], single: float = 4.5) -> WorkerFigures:
    return WorkerFigures(
        pid=1, wait_factors=[1.0], wait_factor=1.0, max_hub_lag_ms=3.0, cpu_during_waits=0.05,
        select1=LatencySummary(0, None, None, None, None, None), select1_qps=0.0,
        cpu_per_query_us=None, hub_lag_timeline=[], connect_single_ms=single,
        connect_windows_ms=[w for w, _ in windows], connect_hub_lag_ms=[lag for _, lag in windows])


# (case, per-worker windows) -> class, as measured (docs/connect-phase.md).
RECORDED = [
    ("python, patched first", [[(37, 13), (113, 84)], [(35, 11), (36, 14)],
                               [(42, 19), (37, 14)], [(35, 13), (37, 14)]], Verdict.OK),
    ("binary, patched first", [[(34, 8), (32, 10)], [(30, 9), (30, 5)],
                               [(41, 12), (35, 7)], [(31, 5), (33, 12)]], Verdict.OK),
    ("psycopg2 + psycogreen", [[(28, 3), (26, 6)], [(30, 5), (29, 1)],
                               [(29, 4), (34, 7)], [(90, 24), (34, 10)]], Verdict.OK),
    ("python, --preload", [[(103, 102), (60, 60)], [(66, 65), (78, 76)],
                           [(51, 49), (66, 65)], [(68, 66), (62, 61)]], Verdict.BLOCKING),
    ("binary, --preload", [[(54, 53), (58, 57)], [(68, 67), (58, 58)],
                           [(63, 62), (65, 62)], [(64, 63), (59, 57)]], Verdict.BLOCKING),
    ("psycopg2, no callback", [[(51, 49), (44, 42)], [(54, 53), (53, 51)],
                               [(65, 63), (66, 63)], [(66, 65), (51, 49)]], Verdict.BLOCKING),
    # 20 ms RTT through a delay proxy, one worker of 16 greenlets (by hand)
    ("python, patched first, 20 ms RTT", [[(72, 13), (65, 8), (80, 15)]], Verdict.OK),
    ("python, imported before patching, 20 ms RTT",
     [[(720, 718), (757, 755), (715, 713)]], Verdict.BLOCKING),
]


@pytest.mark.parametrize(("name", "workers", "expected"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_connect_windows_get_their_class(name, workers, expected):
    figures = [worker(w) for w in workers]
    c = metrics.connect_metrics(figures, min_window_ms=T.connect_min_window_ms)
    assert classify(connect_evidence(c, 16, T)) is expected


def test_one_slow_round_does_not_decide_a_cooperating_worker():
    # A cooperating python worker stalled 84 ms in one round (past the waits' hub-lag limit):
    # the median over its rounds keeps it on the OK side.
    f = worker([(37, 13), (113, 84), (35, 12)])
    assert metrics.stall_share(f) == pytest.approx(13 / 37)


def test_windows_too_short_are_not_judged():
    c = metrics.connect_metrics([worker([(12, 12), (11, 11)], single=0.8)],
                                min_window_ms=T.connect_min_window_ms)
    assert c.stall_share is None
    rules = connect_evidence(c, 16, T)
    assert not any(e.fired for e in rules)
    assert "too short to judge" in rules[0].text and "--rtt" in rules[0].text


def test_build_figures_are_the_worst_workers():
    c = metrics.connect_metrics([worker([(30, 5), (31, 6)]), worker([(90, 88), (70, 69)])])
    assert c.window_ms == 90 and c.rounds == 2 and c.max_hub_lag_ms == 88
    assert c.stall_share == pytest.approx((88 / 90 + 69 / 70) / 2, abs=1e-4)
    assert c.window_factor == pytest.approx(90 / 4.5)


def test_worker_connect_figures_from_a_report():
    # Heartbeat ticks every 2 ms; the tick due inside the window fired 50 ms late.
    report = ProbeResult(pid=1, connect=ConnectPhase(single=[0.0, 0.005], windows=[[1.0, 1.052]]),
                         heartbeat_expected=[0.998, 1.002, 1.054],
                         heartbeat_lag=[0.0, 0.050, 0.0])
    got = metrics._connect_figures(report)
    assert got == {"connect_single_ms": 5.0, "connect_windows_ms": [52.0],
                   "connect_hub_lag_ms": [50.0]}


PRELOADED_PYTHON = {
    "driver": "psycopg", "select_patched": True, "driver_imported_in_master": True,
    "driver_import": {"select_patched": False},
    "psycopg": {"version": "3.3.8", "impl": "python", "wait": "wait_poll",
                "selector": "selectors.EpollSelector"},
}


def test_connect_only_blocking_names_the_selector_and_the_fix():
    cause, advice = causes.explain(Verdict.BLOCKING, PRELOADED_PYTHON, True, {"connect"})
    assert "DefaultSelector = selectors.EpollSelector" in cause
    assert "--preload" in cause and "queries cooperate (wait_poll)" in cause
    assert advice.startswith("drop --preload")


def test_connect_blocking_with_gevents_selector_is_not_blamed_on_import_order():
    facts = dict(PRELOADED_PYTHON, driver_import={"select_patched": True},
                 psycopg=dict(PRELOADED_PYTHON["psycopg"],
                              selector="gevent.selectors.GeventSelector"))
    cause, advice = causes.explain(Verdict.BLOCKING, facts, False, {"connect"})
    assert "gevent.selectors.GeventSelector" in cause and "report it" in advice


def test_waits_blocking_keeps_the_wait_function_cause():
    facts = dict(PRELOADED_PYTHON, psycopg=dict(PRELOADED_PYTHON["psycopg"], wait="wait_c"))
    cause, _ = causes.explain(Verdict.BLOCKING, facts, True, {"waits", "connect"})
    assert "chose wait_c" in cause


def _rules(lags_at: list[tuple[float, float]], rtt_ms: float = 0.0):
    """The worker's early-stop rules over a heartbeat that fired late at the given times."""
    from dataclasses import asdict

    from geventprobe.worker.probe import Heartbeat, Rules

    hb = Heartbeat(0.002)
    hb.expected = [due for due, _ in lags_at]
    hb.lag = [lag for _, lag in lags_at]
    return Rules({"wait_seconds": 0.15, "rtt_ms": rtt_ms, "thresholds": asdict(T)}, hb)


def test_a_worker_stops_its_windows_once_blocking_is_decided():
    # The tick due at the start of a serialised window fired 2.4 s late: decided.
    assert _rules([(1.002, 2.4)]).waits_blocking([[1.0, 3.4]], 3)
    # Healthy windows go on: OK and BUSY-WAIT need every window's CPU.
    healthy = _rules([(1.002, 0.004), (1.2, 0.003)])
    assert not healthy.waits_blocking([[1.0, 1.155]], 3)
    assert not healthy.waits_blocking([], 3)


def test_the_early_stop_reads_the_wait_factor_over_w_plus_rtt():
    # Two windows of 0.34 s: 2.3× w, but 1.0× (w + 190 ms of RTT): the sleeps overlapped.
    windows = [[1.0, 1.34], [2.0, 2.34]]
    assert _rules([], rtt_ms=0).waits_blocking(windows, 3)
    assert not _rules([], rtt_ms=190).waits_blocking(windows, 3)


def test_connect_rounds_stop_once_a_majority_decided_the_median():
    stalled = _rules([(1.002, 0.058), (2.002, 0.058)])
    assert not stalled.connect_decided([[1.0, 1.06]], 3)  # one round decides nothing
    assert stalled.connect_decided([[1.0, 1.06], [2.0, 2.06]], 3)
    mixed = _rules([(1.002, 0.058), (2.002, 0.010)])
    assert not mixed.connect_decided([[1.0, 1.06], [2.0, 2.06]], 3)  # one each way: go on
    # Windows too short to judge are not counted.
    assert not _rules([(1.002, 0.009)]).connect_decided([[1.0, 1.01], [2.0, 2.01]], 3)


def test_one_cooperating_round_of_two_decides_when_no_second_could_pass_the_limit():
    # Of two rounds the median is their mean, and a share stays under SHARE_CEILING: a first
    # round at 0.3 keeps the mean under 0.85 whatever the second does; 0.6 does not.
    from geventprobe.worker.probe import SHARE_CEILING

    assert (0.3 + SHARE_CEILING) / 2 < T.connect_stall_share < (0.6 + SHARE_CEILING) / 2
    assert _rules([(1.002, 0.03)]).connect_decided([[1.0, 1.1]], 2)
    assert not _rules([(1.002, 0.06)]).connect_decided([[1.0, 1.1]], 2)
    # A stalled first round cannot decide BLOCKING alone: a second at 0 would pull it under.
    assert not _rules([(1.002, 0.097)]).connect_decided([[1.0, 1.1]], 2)
    # A first window too short to judge decides nothing.
    assert not _rules([(1.002, 0.003)]).connect_decided([[1.0, 1.01]], 2)
