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
