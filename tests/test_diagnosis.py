"""Causes and fixes are computed from the facts a worker reported."""

from __future__ import annotations

from geventprobe.core.causes import explain
from geventprobe.record import Verdict


def psycopg_facts(wait="wait_c", version="3.3.8", select_patched=True, imported_patched=True,
                  in_master=False, forced=None) -> dict:
    return {
        "driver": "psycopg",
        "psycopg": {"version": version, "impl": "binary", "wait": wait},
        "select_patched": select_patched,
        "driver_import": {"select_patched": imported_patched},
        "driver_imported_in_master": in_master,
        "env": {"PSYCOPG_WAIT_FUNC": forced, "PSYCOPG_IMPL": "binary"},
    }


def test_preload_import_order():
    cause, advice = explain(Verdict.BLOCKING,
                            psycopg_facts(imported_patched=False, in_master=True), preload=True)
    assert "imported before gevent patched select" in cause and "--preload" in cause
    assert "drop --preload" in advice


def test_config_file_import_without_preload():
    cause, advice = explain(Verdict.BLOCKING,
                            psycopg_facts(imported_patched=False, in_master=True), preload=False)
    assert "config file or hook" in cause
    assert "gunicorn config file" in advice


def test_old_psycopg_has_no_gevent_support():
    cause, advice = explain(Verdict.BLOCKING, psycopg_facts(version="3.1.12"), preload=False)
    assert "3.1.12 < 3.1.14" in cause and "#527" in cause
    assert ">=3.1.14" in advice


def test_forced_wait_c():
    cause, advice = explain(Verdict.BLOCKING, psycopg_facts(forced="wait_c"), preload=False)
    assert "PSYCOPG_WAIT_FUNC=wait_c" in cause and "unset" in advice


def test_select_not_patched():
    cause, _ = explain(Verdict.BLOCKING, psycopg_facts(select_patched=False), preload=False)
    assert "select=False" in cause


def test_psycopg2_without_callback():
    facts = {"driver": "psycopg2", "psycopg2": {"wait_callback": None}}
    cause, advice = explain(Verdict.BLOCKING, facts, preload=False)
    assert "no wait callback" in cause
    assert "psycogreen.gevent.patch_psycopg()" in advice and "post_worker_init" in advice


def test_busy_wait_names_the_wait_function():
    cause, advice = explain(Verdict.BUSY_WAIT, psycopg_facts(wait="busy_wait_control"), False)
    assert "busy_wait_control" in cause and "never sleeps" in cause
    assert "PSYCOPG_WAIT_FUNC" in advice


def test_ok_has_no_cause():
    assert explain(Verdict.OK, psycopg_facts(wait="wait_poll"), False) == (None, None)


def _timed_out(facts: dict):
    """The row of a run whose worker gunicorn killed for WORKER TIMEOUT in the probe."""
    import time
    from types import SimpleNamespace

    from geventprobe.app.wsgi_run import WorkersRun
    from geventprobe.core.builds import Build
    from geventprobe.core.judge import judge
    from geventprobe.settings import Thresholds, Workload

    subject = SimpleNamespace(build=Build(name="app", baseline=False, expected=None, env={},
                                          description=""), preload=False)
    run = WorkersRun(timed_out_pids=[7], timeout_s=1, ready_facts=facts)
    return judge(subject, run, Workload(), Thresholds(), time.monotonic())


def test_a_worker_timeout_with_a_cooperating_driver_does_not_blame_the_driver():
    # Issue 19, rows 14-15: wait_poll yields; the hub was held by something else.
    row = _timed_out(psycopg_facts(wait="wait_poll"))
    assert row.verdict is Verdict.BLOCKING
    assert row.evidence[0].text.endswith("for longer than --timeout 1 s")
    assert "wait_poll yields to the hub): something else in the worker blocked it" in row.cause
    assert "psycopg" not in row.advice and "report it" not in row.advice
    # wait_c does block: then the driver's cause stands.
    assert "wait_c" in _timed_out(psycopg_facts()).cause
