"""The in-worker wait window and heartbeat, with a stand-in driver (no server, no gunicorn).

A driver that blocks the hub waits in C with the GIL released (here: ``time.sleep`` in
slices, gevent not patched); one that cooperates yields to the hub (``gevent.sleep``).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import gevent

from geventprobe.settings import Thresholds
from geventprobe.worker.probe import Heartbeat, Rules, wait_window

W = 0.15


class StandIn:
    """``probe.Driver``'s calls: each query sleeps ``pg_sleep``'s argument, blocking the
    hub or not, until it is cancelled (the server would end it at once)."""

    def __init__(self, blocking: bool):
        self.blocking = blocking
        self.cancelled = 0
        self.ran = 0

    def query(self, cursor, sql, params=None):
        conn = cursor
        conn.cancel_asked = False
        end = time.monotonic() + params[0]
        while time.monotonic() < end:
            if conn.cancel_asked:
                raise QueryCanceledError("canceling statement due to user request")
            if self.blocking:
                time.sleep(0.002)  # in "C", the GIL let go: a thread may run meanwhile
            else:
                gevent.sleep(0.002)
        self.ran += 1

    def cancel(self, conn):
        self.cancelled += 1
        conn.cancel_asked = True


class QueryCanceledError(Exception):
    """psycopg2's name for it."""


class Conn:
    cancel_asked = False


def _window(blocking: bool, greenlets: int = 16, thresholds: bool = True):
    heartbeat = Heartbeat(0.002)
    workload = {"wait_seconds": W}
    if thresholds:
        workload["thresholds"] = asdict(Thresholds())
    rules = Rules(workload, heartbeat)
    driver = StandIn(blocking)
    conns = [Conn() for _ in range(greenlets)]
    heartbeat.start()
    gevent.sleep(0.02)
    window, off = wait_window(driver, conns, conns, rules)
    gevent.sleep(0.01)
    heartbeat.pause()
    return window, off, driver, heartbeat


def test_a_blocked_window_is_called_off_once_both_rules_are_decided():
    (t0, t1), off, driver, heartbeat = _window(blocking=True)
    # 16 × 0.15 s one after another would take 2.4 s; at 4·w the hub had not run for w.
    assert 4 * W <= t1 - t0 < 6 * W
    assert driver.ran + off == 16 and off >= 10
    assert driver.cancelled == 1  # the one running was cancelled, the others skipped
    lag = max(lag for due, lag in zip(heartbeat.expected, heartbeat.lag) if t0 <= due <= t1)
    assert lag >= 0.5 * W  # the hub-lag rule fires on the same window


def test_a_cooperating_window_runs_out():
    (t0, t1), off, driver, _ = _window(blocking=False)
    assert off == 0 and driver.cancelled == 0 and driver.ran == 16
    assert t1 - t0 < 2 * W


def test_without_thresholds_nothing_is_called_off():
    (t0, t1), off, driver, _ = _window(blocking=True, greenlets=6, thresholds=False)
    assert off == 0 and driver.ran == 6 and t1 - t0 >= 6 * W


def test_the_call_off_point_is_twice_both_limits():
    rules = Rules({"wait_seconds": W, "thresholds": asdict(Thresholds())}, Heartbeat(0.002))
    after, stalled = rules.call_off_after()
    assert abs(after - 4 * W) < 1e-9 and abs(stalled - W) < 1e-9
    rtt = Rules({"wait_seconds": W, "rtt_ms": 20, "thresholds": asdict(Thresholds())},
                Heartbeat(0.002))
    assert abs(rtt.call_off_after()[0] - 4 * (W + 0.02)) < 1e-9


def test_a_paused_heartbeat_does_not_tick():
    heartbeat = Heartbeat(0.002)
    heartbeat.start()
    gevent.sleep(0.03)
    heartbeat.pause()
    paused = time.monotonic()
    gevent.sleep(0.05)
    resumed = time.monotonic()
    heartbeat.start()
    gevent.sleep(0.03)
    heartbeat.pause()
    assert not [due for due in heartbeat.expected if paused + 0.003 < due < resumed]
    assert len([due for due in heartbeat.expected if due > resumed]) >= 5
