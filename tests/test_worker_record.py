"""The records a worker sends the parent: typed, versioned, and checked on arrival.

Pure tests of ``worker/record.py`` (every record round-trips; a wrong version or a wrong
type is one line naming the file and the field), of the parent's reader
(``processes/workers.read_records``: a ProbeError, exit 2), and one real command: a
project whose directory holds a stale copy of geventprobe (which gunicorn, run there,
imports before ours) is refused with one line, not a KeyError.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from geventprobe.errors import ProbeError
from geventprobe.processes.run_dir import read_records
from geventprobe.worker import record
from geventprobe.worker.record import (
    AppError,
    BlockedEvent,
    ConnectPhase,
    GunicornSettings,
    ProbeResult,
    Ready,
    RoutePhase,
    RouteReady,
)

SRC = Path(__file__).parent.parent / "src" / "geventprobe"

RESULT = ProbeResult(
    pid=7, facts={"driver": "psycopg", "psycopg": {"wait": "wait_poll"}},
    facts_after={"driver": "psycopg"},
    connect=ConnectPhase(single=[1.0, 1.004], windows=[[1.1, 1.15], [1.2, 1.24]]),
    blocked_connect=[BlockedEvent(t=1.12, s=0.05, frames=["app.py:3 in f"], user=0)],
    wait_seconds=0.15, windows=[[2.0, 2.16]], blocked=[], select1_window=[3.0, 3.3],
    select1_latencies_us=[80, 95, 120], heartbeat_expected=[2.002, 2.004],
    heartbeat_lag=[0.0001, 0.0002])

RECORDS = [RESULT, ProbeResult(pid=8, error="ImportError: no psycopg", traceback="..."),
           Ready(pid=7, port=40123, facts={"driver": None}), Ready(pid=7, port=None, facts={}),
           RouteReady(pid=7),
           RoutePhase(pid=7, heartbeat_expected=[1.0], heartbeat_lag=[0.0], requests=[1.5],
                      blocked=[BlockedEvent(t=1.5, s=0.3, frames=["a", "b"], user=None)]),
           AppError(pid=7, where="while the gunicorn worker imported the app",
                    error="ImportError: x", origin="app.py, line 1"),
           GunicornSettings(ok=True, config="gunicorn.conf.py", worker_class="gevent",
                            gevent=True, workers=3, timeout=30, hooks=["post_fork"]),
           GunicornSettings(ok=False, stage="config", error="NameError: x")]


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_survives_the_trip_through_its_file(rec, tmp_path):
    path = tmp_path / "r.json"
    record.write(str(path), rec)
    data = json.loads(path.read_text())
    assert data["version"] == record.RECORD_VERSION
    assert record.read(type(rec), str(path)) == rec


def test_another_version_is_one_line_that_says_what_to_do():
    data = dict(record.dump(RESULT), version=1)
    with pytest.raises(record.RecordError) as info:
        record.load(ProbeResult, data, "result-7.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("result-7.json is a record of version 1 but this geventprobe "
                              f"reads version {record.RECORD_VERSION}")
    assert "another copy of geventprobe" in message


@pytest.mark.parametrize("change, words", [
    ({"windows": "soon"}, 'result-7.json.windows is "soon", not a list'),
    ({"windows": [[1.0, "x"]]}, 'result-7.json.windows[0][1] is "x", not a number'),
    ({"pid": True}, "result-7.json.pid is true, not a whole number"),
    ({"connect": {"single": [1, 2]}}, "result-7.json.connect lacks the field 'windows'"),
    ({"blocked": [{"t": 1, "s": 0, "frames": [], "user": "me"}]},
     'result-7.json.blocked[0].user is "me", not a whole number'),
    ({"surprise": 1}, "result-7.json has a field 'surprise' that ProbeResult does not"),
])
def test_a_field_of_the_wrong_type_is_named(change, words):
    data = dict(record.dump(RESULT), **change)
    with pytest.raises(record.RecordError, match=None) as info:
        record.load(ProbeResult, data, "result-7.json")
    assert str(info.value) == words


def test_the_parent_refuses_a_record_it_cannot_read(tmp_path):
    record.write(str(tmp_path / "result-7.json"), RESULT)
    assert read_records(str(tmp_path), "result") == {7: RESULT}
    stale = dict(record.dump(dataclasses.replace(RESULT, pid=9)), version=1)
    (tmp_path / "result-9.json").write_text(json.dumps(stale))
    with pytest.raises(ProbeError, match=r"^cannot read a worker's report: result-9.json is a "
                                         r"record of version 1"):
        read_records(str(tmp_path), "result")


def test_a_stale_geventprobe_in_the_project_is_refused_in_one_line(run_cli, tmp_path):
    project = tmp_path / "project"
    stale = project / "geventprobe"
    shutil.copytree(SRC / "worker", stale / "worker",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SRC / "__init__.py", stale / "__init__.py")
    code = (stale / "worker" / "record.py").read_text()
    (stale / "worker" / "record.py").write_text(
        code.replace(f"RECORD_VERSION = {record.RECORD_VERSION}\n", "RECORD_VERSION = 1\n"))
    (project / "app.py").write_text("def application(environ, start_response):\n"
                                    "    return []\n")
    proc = run_cli("run", "--app", "app:application", "--chdir", str(project))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("geventprobe: error: cannot read your gunicorn settings: "
                               "settings.json is a record of version 1 but this geventprobe "
                               f"reads version {record.RECORD_VERSION}")
