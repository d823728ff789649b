"""Calibration: controls with a known class, judged by the same rules; saturation withholds."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from test_terminal_width import assert_fits, in_a_terminal

from geventprobe.core import calibrate, rules
from geventprobe.core.builds import Availability
from geventprobe.record import (
    BuildMetrics,
    BuildResult,
    ConnectFigures,
    ControlOutcome,
    LatencySummary,
    Verdict,
)
from geventprobe.settings import Thresholds

T = Thresholds()
DATA = Path(__file__).parent / "data"


def available(*names: str) -> dict[str, Availability]:
    every = ("binary", "c", "python", "psycopg2-green", "psycopg2")
    return {n: Availability(n, n in names, None, None, None) for n in every}


def test_controls_cover_every_class():
    names = [c.name for c in calibrate.controls(available("binary", "c", "python",
                                                          "psycopg2-green", "psycopg2"))]
    assert names == ["preload-binary", "wait_c-binary", "preload-python-connect",
                     "psycopg2-no-callback",
                     "busy-wait-binary", "healthy-binary", "healthy-c", "healthy-python",
                     "healthy-psycopg2-green"]


def test_controls_fall_back_to_what_imports():
    controls = calibrate.controls(available("c", "python"))
    assert [c.name for c in controls] == ["preload-c", "wait_c-c", "preload-python-connect",
                                          "busy-wait-c", "healthy-c",
                                          "healthy-python"]


def outcome(control: str, expected: Verdict, got: Verdict, lag: float = 5.0,
            cpu: float = 0.04, factor: float = 1.03) -> ControlOutcome:
    return ControlOutcome(control=control, description="", build="binary",
                          expected=expected.value, got=got.value, passed=expected is got,
                          wait_factor=factor, max_hub_lag_ms=lag, cpu_during_waits=cpu,
                          foreign_busy=0.05, margin=None, evidence=[])


# Figures of a calibrate run on the 2-core box (psycopg 3.3.8, 4 workers × 16 greenlets).
PASSING = [
    outcome("preload-binary", Verdict.BLOCKING, Verdict.BLOCKING, 2418.3, 0.003, 16.09),
    outcome("psycopg2-no-callback", Verdict.BLOCKING, Verdict.BLOCKING, 2414.2, 0.001, 16.09),
    outcome("busy-wait-binary", Verdict.BUSY_WAIT, Verdict.BUSY_WAIT, 18.0, 0.553, 1.04),
    outcome("healthy-binary", Verdict.OK, Verdict.OK, 5.5, 0.058, 1.03),
    outcome("healthy-psycopg2-green", Verdict.OK, Verdict.OK, 3.9, 0.055, 1.03),
]


def test_all_controls_right_passes():
    cal = calibrate.judge(PASSING, T, 0.15, 0.0)
    assert cal.passed and not cal.saturated
    assert "all 5 controls got their class" in cal.reason


def test_a_missed_control_fails_naming_it_and_its_figures():
    # The busy-wait control of a loaded run judged by CPU alone (0.183 < 0.2): missed.
    missed = outcome("busy-wait-binary", Verdict.BUSY_WAIT, Verdict.OK, 34.1, 0.183, 1.14)
    cal = calibrate.judge([*PASSING[:2], missed, *PASSING[3:]], T, 0.15, 0.0)
    assert not cal.passed and not cal.saturated
    assert "busy-wait-binary expected BUSY-WAIT but got OK" in cal.reason
    assert "CPU in waits 0.183" in cal.reason


def test_a_class_without_any_control_is_not_a_pass():
    cal = calibrate.judge([o for o in PASSING if o.expected != "BUSY-WAIT"], T, 0.15, 0.0)
    assert not cal.passed and "no control for BUSY-WAIT" in cal.reason


def test_healthy_controls_lagging_means_saturated_not_blocking():
    starved = outcome("healthy-binary", Verdict.OK, Verdict.BLOCKING, 108.8, 0.042, 1.59)
    cal = calibrate.judge([*PASSING[:3], starved, PASSING[4]], T, 0.15, 0.0)
    assert cal.saturated and not cal.passed
    assert "saturated" in cal.reason and "109 ms hub lag" in cal.reason


def recorded_saturated_run() -> list[BuildResult]:
    """A real run on a starved core (see tests/data/saturated-run.json), re-judged here."""
    data = json.loads((DATA / "saturated-run.json").read_text())
    results = []
    for name, b in data["builds"].items():
        m = BuildMetrics(select1=LatencySummary(0, None, None, None, None, None),
                         select1_qps=0.0, cpu_per_query_us=None, latency_histogram={},
                         **b["metrics"])
        evidence = rules.evidence(m, T)
        results.append(BuildResult(
            build=name, description="", baseline=b["baseline"], expected=b["expected"],
            verdict=rules.classify(evidence), cause=None, advice=None, evidence=evidence, facts={},
            metrics=m, workers=[]))
    return results


def test_saturated_machine_gives_inconclusive_not_blocking():
    results = recorded_saturated_run()
    by = {r.build: r for r in results}
    # What the rules alone say on a starved machine: a false BLOCKING for a healthy build...
    assert by["binary"].verdict is Verdict.BLOCKING
    assert by["psycopg2-green"].verdict is Verdict.BLOCKING
    # ...which the run's own cooperating baseline exposes.
    reason = rules.distrust(results)
    assert reason is not None and "too saturated" in reason and "96% of the cores" in reason
    withheld = {r.build: r for r in rules.withhold(results, reason)}
    assert withheld["binary"].verdict is Verdict.INCONCLUSIVE
    assert withheld["binary"].evidence == by["binary"].evidence
    assert "too saturated" in withheld["psycopg2-green"].cause
    assert rules.exit_code(list(withheld.values())) == 3


@pytest.mark.integration
def test_calibrate_classifies_every_control(probe_tmp, tmp_path, schema):
    # In an 80-column terminal, as from a shell: every line it prints fits.
    out = tmp_path / "cal.json"
    code, lines = in_a_terminal(["calibrate", "--workers", "2", "--greenlets", "8",
                                 "--json", str(out)], probe_tmp)
    output = "\n".join(lines)
    assert code == 0, output
    assert_fits(lines)
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    cal = result["calibration"]
    assert cal["passed"] and not cal["saturated"]
    got = {o["control"]: o["got"] for o in cal["outcomes"]}
    assert got["preload-binary"] == got["wait_c-binary"] == "BLOCKING"
    assert got["psycopg2-no-callback"] == "BLOCKING"
    # Judged only when its connect windows were long enough (8 connects on loopback).
    connect = next(o for o in cal["outcomes"] if o["control"] == "preload-python-connect")
    assert connect["passed"] is None or connect["got"] == "BLOCKING", connect
    assert got["busy-wait-binary"] == "BUSY-WAIT"
    assert {got[f"healthy-{b}"] for b in ("binary", "c", "python", "psycopg2-green")} == {"OK"}
    assert "calibration" in output and "BUSY-WAIT ✓" in output


@pytest.mark.integration
def test_run_with_calibration_records_it(run_cli, tmp_path, schema):
    out = tmp_path / "r.json"
    proc = run_cli("run", "--calibrate", "--workers", "2", "--greenlets", "4",
                   "--builds", "python", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    assert result["calibration"]["passed"]
    assert [b["build"] for b in result["builds"]] == ["python"]
    assert result["builds"][0]["verdict"] == "OK"
    assert "calibration PASSED" in proc.stdout


def test_a_connect_control_with_windows_too_short_did_not_run():
    control = next(c for c in calibrate.controls(available("python"))
                   if c.name == "preload-python-connect")
    m = BuildMetrics(
        workers=2, greenlets=4, wait_seconds=0.15, wait_rounds=3, wait_factor=1.02,
        max_hub_lag_ms=1.1, cpu_during_waits=0.08, cpu_during_waits_median=0.08,
        machine_busy=0.2, select1=LatencySummary(0, None, None, None, None, None),
        select1_qps=0, cpu_per_query_us=None, latency_histogram={},
        connect=ConnectFigures(single_ms=3.0, window_ms=16.7, window_factor=5.6,
                               max_hub_lag_ms=16.0, rounds=2, stall_share=None))
    result = BuildResult(build="python", description="", baseline=False, expected=None,
                         verdict=Verdict.OK, cause=None, advice=None, evidence=[], facts={},
                         metrics=m, workers=[])
    got = calibrate.outcome(control, result)
    assert got.passed is None and "too short" in got.error
