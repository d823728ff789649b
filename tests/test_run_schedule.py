"""How a run spends its time, seen from outside a real run: every build's gunicorn boots
before any build is measured, a build waiting for its turn holds no server connection and
is measured alone, a blocked window is cut short once decided, and the harness's gunicorn
leaves as soon as its workers are killed."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from conftest import by_build

from geventprobe.processes import gunicorn_workers
from geventprobe.settings import Workload

pytestmark = pytest.mark.integration


def _pids(run_dir: str, prefix: str) -> list[int]:
    return [int(os.path.basename(p)[len(prefix) + 1:-len(".json")])
            for p in glob.glob(os.path.join(run_dir, f"{prefix}-*.json"))]


def _connections(pids: list[int]) -> int:
    """Established TCP connections of these processes (a waiting worker has only its
    listening socket: no request comes to it, and its route's pool is not open yet)."""
    n = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            n += sum(c.status == psutil.CONN_ESTABLISHED
                     for c in psutil.Process(pid).net_connections(kind="tcp"))
    return n


def test_builds_boot_together_and_wait_their_turn_without_connections(probe_tmp, tmp_path):
    out = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = probe_tmp
    proc = subprocess.Popen([sys.executable, "-m", "geventprobe", "run", "--workers", "2",
                             "--greenlets", "8", "--builds", "binary,psycopg2",
                             "--json", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = None
    first: str | None = None
    first_gone_at_second_go = None
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            dirs = glob.glob(os.path.join(probe_tmp, "geventprobe-run-*"))
            said_go = [d for d in dirs if os.path.exists(os.path.join(d, "go"))]
            if first is None and said_go:
                first = said_go[0]
            if said_go == [first]:
                # While the first build is measured, the second waits its turn: booted
                # beside it (its workers get ready within a few ms of the first's go, not
                # necessarily before it: 1 of 2 ready once in a fresh clone's run), and
                # holding no connection to the server: its connect phase is its own.
                waiting = [d for d in dirs if d not in said_go]
                ready = [p for d in waiting for p in _pids(d, "ready")]
                now = {"dirs": len(dirs), "waiting_ready": len(ready),
                       "waiting_connections": _connections(ready)}
                seen = now if seen is None else {
                    "dirs": max(seen["dirs"], now["dirs"]),
                    "waiting_ready": max(seen["waiting_ready"], now["waiting_ready"]),
                    "waiting_connections": max(seen["waiting_connections"],
                                               now["waiting_connections"])}
            if first is not None and [d for d in said_go if d != first] \
                    and first_gone_at_second_go is None:
                # The first build's gunicorn was reaped and its run dir removed before the
                # second was told go: nothing of it runs beside the second's measurements.
                first_gone_at_second_go = not os.path.exists(first)
            time.sleep(0.005)
        output = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    # During the first build's turn the second booted (its two workers ready) and held no
    # connection to the server.
    assert seen == {"dirs": 2, "waiting_ready": 2, "waiting_connections": 0}, seen
    assert first_gone_at_second_go is True
    builds = by_build(json.loads(out.read_text()))
    assert builds["binary"]["verdict"] == "OK"
    blocked = builds["psycopg2"]
    assert blocked["verdict"] == "BLOCKING"
    # Once both rules had fired, the rest of the blocked window was called off.
    assert blocked["metrics"]["wait_called_off"] > 0
    wait = next(e for e in blocked["evidence"] if e["rule"] == "wait-factor")
    assert wait["fired"] and "were called off" in wait["text"], wait


def test_the_harness_master_leaves_once_its_workers_are_killed(probe_tmp, monkeypatch):
    monkeypatch.setenv("TMPDIR", probe_tmp)
    monkeypatch.setattr("tempfile.tempdir", None)
    booted = gunicorn_workers.boot({"GEVENTPROBE_BUILD": "binary", "PSYCOPG_IMPL": "binary"},
                                   Workload(workers=2, greenlets=2), "host=127.0.0.1 port=1",
                                   False)
    try:
        deadline = time.monotonic() + 60
        while len(_pids(booted.run_dir, "ready")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_pids(booted.run_dir, "ready")) == 2
        # No SIGINT: the master sees its workers killed and "stop" there, and leaves
        # without forking others in their place.
        gunicorn_workers._quick_stop(booted.proc, booted.run_dir, harness=True)
        assert booted.proc.wait(timeout=5) == 0
        with open(booted.log_path) as f:
            assert f.read().count("Booting worker") == 2
    finally:
        gunicorn_workers.finish_previous()
        booted.discard()
