"""The in-worker heartbeat, in a gevent loop of its own (no server, no gunicorn)."""

from __future__ import annotations

import time

import gevent

from geventprobe.worker.probe import Heartbeat


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
